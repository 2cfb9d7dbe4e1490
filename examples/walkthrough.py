# %% [markdown]
# # detect in a notebook: train, predict a GeoTIFF, draw, evaluate, export
#
# A walkthrough in `# %%` cells (Jupyter, VS Code or `python examples/walkthrough.py`
# from the repository root). It uses the bundled sample scenes only, no downloads.
# `WALKTHROUGH_BUDGET` (default 1m) is the training time; `WALKTHROUGH_OUT` the
# output folder (default out/walkthrough). A test runs this file.

# %%
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

import detect

DATA = Path("data")
OUT = Path(os.environ.get("WALKTHROUGH_OUT", "out/walkthrough"))
BUDGET = os.environ.get("WALKTHROUGH_BUDGET", "1m")
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Train for a wall-clock budget
# The schedule (epochs, warmup, cosine) is fitted to the steps this machine can
# do in `BUDGET`; validation AP is computed after every epoch.

# %%
run = detect.train(DATA / "sample/annotations.json", DATA / "sample/images", OUT / "run",
                   config=DATA / "sample_config.yaml", val_ann=DATA / "sample_val/annotations.json",
                   val_images=DATA / "sample_val/images", time_budget=BUDGET, overwrite=True, verbose=0)
print(run, "last epoch:", {k: run.metrics[-1][k] for k in ("epoch", "loss", "val_AP50")})

# %% [markdown]
# ## Predict a GeoTIFF
# The sample scene is a JPEG; here it becomes a georeferenced GeoTIFF (UTM zone
# 33N, 0.3 m pixels, a made-up origin) as an orthophoto tile would arrive.
# Rasters of any size are read window by window and tiled.

# %%
import rasterio  # noqa: E402  (the [geo] extra)
from rasterio.transform import from_origin  # noqa: E402

rgb = cv2.imread(str(DATA / "sample_scene/images/scene_0000.jpg"))[..., ::-1]
tif = OUT / "scene.tif"
with rasterio.open(tif, "w", driver="GTiff", width=rgb.shape[1], height=rgb.shape[0], count=3,
                   dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4100000, 0.3, 0.3)) as dst:
    dst.write(rgb.transpose(2, 0, 1))

model = detect.load_model(run.path)
(scene,) = detect.predict(model, tif)
print(scene)
print(scene.filter(score=0.5).counts())
gdf = scene.to_geodataframe()  # box polygons in the raster's CRS (geopandas)
print(gdf.head())

# %% [markdown]
# ## Draw

# %%
cv2.imwrite(str(OUT / "scene_detections.jpg"), scene.plot()[..., ::-1])  # plot() is RGB
print("wrote", OUT / "scene_detections.jpg")

# %% [markdown]
# ## Evaluate (pycocotools-exact) on the held-out scenes

# %%
report = detect.evaluate(model, DATA / "sample_val/annotations.json", DATA / "sample_val/images")
print(report)
plots = report.plot(OUT / "plots")
print(f"AP50 {report.stats[1]:.3f}; {len(plots)} precision-recall plots in {OUT / 'plots'}")

# %% [markdown]
# ## Predict arrays, write what `detect predict` writes, export

# %%
batch = np.stack([rgb[:256, :256], rgb[256:512, 256:512]])
print([len(d) for d in detect.predict(model, batch)])
detect.predict(model, DATA / "sample_val/images", out=OUT / "predict", overwrite=True)
print(sorted(p.name for p in (OUT / "predict").iterdir()))
shutil.rmtree(OUT / "saved_model", ignore_errors=True)
detect.export(model, OUT / "saved_model")
print("SavedModel in", OUT / "saved_model")
