import asyncio, io, time, numpy as np, httpx
from PIL import Image
from service.app import create_app
from service.settings import Settings
from bench.colour_photos import add_noise_8bit, add_impulses, png_bytes
async def main():
    from skimage import data
    photos = {n: getattr(data, n)()[..., :3] for n in ("chelsea", "astronaut", "coffee")}
    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        while not app.state.store.ready: await asyncio.sleep(0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x", timeout=300) as c:
            for name, clean in photos.items():
                for kind, noisy in (("gauss", add_noise_8bit(clean, 25, 0)), ("s&p", add_impulses(clean, "salt-and-pepper", 0.2, 0))):
                    ts = []
                    for _ in range(3):
                        t = time.perf_counter()
                        r = await c.post("/denoise", files={"file": ("a.png", png_bytes(noisy), "image/png")}, data={"model": "photo-blind"}, headers={"Accept": "image/png"})
                        ts.append(time.perf_counter() - t)
                    out = np.asarray(Image.open(io.BytesIO(r.content)))
                    print(f"{name} {clean.shape[1]}x{clean.shape[0]} {kind}: {np.median(ts):.2f} s  sum={int(out.sum())}")
if __name__ == "__main__":
    asyncio.run(main())
