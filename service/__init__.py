"""The FastAPI microservice that serves the shipped denoisers (built in the serving issue)."""
