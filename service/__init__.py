"""The FastAPI microservice that serves the shipped denoisers: loads the checkpoints, batches requests, answers HTTP."""
