// The demo page: send the chosen image to POST /denoise with the chosen model and noise, show the result.
"use strict";

const defaultLevels = {}; // noise name → its default level, from GET /noises
const photoLevels = {}; // noise name → where a photo starts: within the photo model's training (GET /noises)
// The last choice of the noise list: add none, the upload is the noisy image (a user's own photo), denoised as it is.
const AS_IT_IS = "";

const $ = (id) => document.getElementById(id);
let currentImage = null; // a Blob: the sample or the upload
let currentUrl = null;
let currentIsPhoto = false; // anything but a 28×28 digit: the service's own rule for its automatic model
let levelMoved = false; // the user moved the level since choosing the noise: theirs is kept

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.detail}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadNoises() {
  const response = await fetch("/noises");
  if (!response.ok) {
    setStatus(`Could not list the noises (${await errorText(response)})`, true);
    return;
  }
  const select = $("noise");
  select.replaceChildren();
  for (const noise of (await response.json()).noises) {
    defaultLevels[noise.name] = noise.default_level;
    photoLevels[noise.name] = noise.photo_level;
    const option = document.createElement("option");
    option.value = noise.name;
    option.textContent = noise.label;
    option.title = `level: ${noise.level_means}`;
    select.append(option);
  }
  const asItIs = document.createElement("option");
  asItIs.value = AS_IT_IS;
  asItIs.textContent = "none: my image is already noisy";
  asItIs.title = "denoise the image as it is; with no clean original there is no PSNR to show";
  select.append(asItIs);
  resetLevel();
}

// The noise's starting level for the image shown: a photo's lies within the photo model's training (Gaussian σ
// 0.3, the digits' default, is far past it and shows the model at its worst), a digit's is the reference default.
function resetLevel() {
  const noise = $("noise").value;
  if (noise === AS_IT_IS || !(noise in defaultLevels)) return;
  $("level").value = (currentIsPhoto ? photoLevels : defaultLevels)[noise];
  levelMoved = false;
  updateLevelLabel();
}

async function loadModels() {
  const response = await fetch("/models", { headers: authHeaders() });
  if (!response.ok) {
    setStatus(`Could not list the models (${await errorText(response)})`, true);
    return false;
  }
  const body = await response.json();
  const select = $("model");
  select.replaceChildren(select.options[0]); // "automatic": the service picks by the image, and says which
  for (const model of body.models) {
    const option = document.createElement("option");
    option.value = model.name;
    const size = model.input_size ? model.input_size.join("×") : "any size";
    option.textContent = `${model.name} (${model.architecture}, ${model.dataset}, ${model.noise}, ${size})`;
    select.append(option);
  }
  setStatus("Pick a digit or a photo, or upload an image.");
  return true;
}

// Whether this browser can show the image at `url` (Chrome shows no TIFF and no HEIC, both of which the service takes).
function displays(url) {
  return new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => resolve(true);
    probe.onerror = () => resolve(false);
    probe.src = url;
  });
}

async function showClean(blob) {
  if (currentUrl) URL.revokeObjectURL(currentUrl);
  currentUrl = URL.createObjectURL(blob);
  if (!(await displays(currentUrl))) {
    // The service's own PNG of the upload (its decode: turned, first frame, grey or colour kept), from /corrupt
    // with no noise; if the service cannot read it either, the denoise request that follows says why.
    const form = new FormData();
    form.append("file", blob, blob.name || "image");
    form.append("noise", "none");
    const response = await fetch("/corrupt", { method: "POST", body: form, headers: authHeaders() });
    if (response.ok) {
      URL.revokeObjectURL(currentUrl);
      currentUrl = URL.createObjectURL(await response.blob());
    }
  }
  $("clean").src = currentUrl;
  $("results").hidden = false;
  try {
    await $("clean").decode();
  } catch {
    return; // nothing the browser can show: the denoise request that follows says what is wrong
  }
  const isPhoto = !($("clean").naturalWidth === 28 && $("clean").naturalHeight === 28);
  if (isPhoto !== currentIsPhoto) {
    currentIsPhoto = isPhoto;
    if (!levelMoved) resetLevel();
  }
}

async function useImage(blob) {
  currentImage = blob;
  await showClean(blob);
  await run();
}

async function run() {
  if (!currentImage) {
    setStatus("Pick a digit or upload an image first.", true);
    return;
  }
  const form = new FormData();
  form.append("file", currentImage, currentImage.name || "image.png");
  if ($("model").value !== "") form.append("model", $("model").value);
  const addNoise = $("noise").value !== AS_IT_IS;
  if (addNoise) {
    form.append("noise", $("noise").value);
    form.append("level", $("level").value);
    if ($("seed").value !== "") form.append("seed", $("seed").value);
  }
  setStatus("Denoising…");
  const response = await fetch("/denoise", {
    method: "POST",
    body: form,
    headers: { Accept: "application/json", ...authHeaders() },
  });
  if (!response.ok) {
    setStatus(`The service said ${await errorText(response)}`, true);
    return;
  }
  const result = await response.json();
  // Digits are shown enlarged with hard pixel edges; anything larger at its own resolution.
  $("results").classList.toggle("photo", result.width > 64 || result.height > 64);
  $("denoised").src = `data:image/png;base64,${result.denoised_png}`;
  // The answer at full resolution, its profile and EXIF kept, named after the upload.
  $("download").href = $("denoised").src;
  $("download").download = `${(currentImage.name || "image").replace(/\.[^.]*$/, "")}-denoised.png`;
  $("download").hidden = false;
  // Without added noise the upload itself is the noisy image, and there is no clean one to score against.
  $("clean-figure").hidden = !addNoise;
  $("noisy-label").textContent = addNoise ? "noisy" : "your image";
  if (!addNoise) {
    $("noisy").src = currentUrl;
    $("noisy-psnr").textContent = "";
    $("denoised-psnr").textContent = "";
    setStatus(
      `${result.model} (${result.model_reason}): your image as it is, no noise added, ` +
        `${result.width}×${result.height}, in ${result.latency_ms.toFixed(1)} ms ` +
        `(mean squared change ${result.reconstruction_mse.toExponential(2)})`,
    );
    return;
  }
  $("noisy").src = `data:image/png;base64,${result.noisy_png}`;
  $("noisy-psnr").textContent = `PSNR ${result.noisy_psnr_db.toFixed(2)} dB`;
  $("denoised-psnr").textContent = `PSNR ${result.denoised_psnr_db.toFixed(2)} dB`;
  setStatus(
    `${result.model} (${result.model_reason}): ${result.noise.type} at ${result.noise.level} ` +
      `(seed ${result.noise.seed}), ` +
      `${result.width}×${result.height}, PSNR ${result.noisy_psnr_db.toFixed(2)} → ` +
      `${result.denoised_psnr_db.toFixed(2)} dB in ${result.latency_ms.toFixed(1)} ms`,
  );
}

function updateLevelLabel() {
  $("level-value").textContent = Number($("level").value).toFixed(2);
}

function wire() {
  for (const button of document.querySelectorAll(".sample")) {
    button.addEventListener("click", async () => {
      for (const other of document.querySelectorAll(".sample")) other.setAttribute("aria-pressed", "false");
      button.setAttribute("aria-pressed", "true");
      const response = await fetch(button.dataset.src);
      const blob = await response.blob();
      await useImage(new File([blob], button.dataset.src.split("/").pop(), { type: "image/png" }));
    });
  }
  $("upload").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) await useImage(file);
  });
  $("noise").addEventListener("change", () => {
    const asItIs = $("noise").value === AS_IT_IS;
    $("level").disabled = $("seed").disabled = asItIs;
    resetLevel();
    updateLevelLabel();
    if (currentImage) run();
  });
  $("level").addEventListener("input", () => {
    levelMoved = true;
    updateLevelLabel();
  });
  $("level").addEventListener("change", () => currentImage && run());
  $("model").addEventListener("change", () => currentImage && run());
  $("run").addEventListener("click", run);
  $("api-key").addEventListener("change", loadModels);
  updateLevelLabel();
}

wire();
loadNoises();
loadModels();
