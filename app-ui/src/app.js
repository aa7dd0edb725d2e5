// The in-chat app of pixazo-mcp (ui://pixazo/app): shows the image a tool made (or the listed
// generations), and lets the person regenerate, vary, upscale, remove the background, outpaint,
// inpaint with a painted mask, download and choose, each through the server's tools. Every pixel
// comes through the host from our server (app-only tools, resources/read): nothing is fetched from
// another origin. Prompts are untrusted: text only ever goes in through textContent and value.
import { App } from "@modelcontextprotocol/ext-apps";

const app = new App({ name: "pixazo-app", version: "1.0.0" });
const $ = (id) => document.getElementById(id);
const view = { current: null, busy: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "on") for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function status(text, kind = "") {
  const box = $("status");
  box.textContent = text;
  box.className = kind;
}

function errorText(result) {
  return (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join(" ") || "The call failed.";
}

async function call(name, args) {
  const result = await app.callServerTool({ name, arguments: args });
  if (result.isError) throw new Error(errorText(result));
  return result;
}

// Pixels through the server: a display-size rendition (or a thumbnail) of a stored image.
async function imageData(id, size) {
  const result = await call("pix_app_image", { id, size });
  const image = (result.content || []).find((c) => c.type === "image");
  return image ? `data:${image.mimeType};base64,${image.data}` : null;
}

function applyTheme(context) {
  if (!context) return;
  if (context.theme) document.documentElement.dataset.theme = context.theme;
  if (context.displayMode) document.documentElement.dataset.display = context.displayMode;
}

// A generation that is still being made: wait for it through pix_wait, then show it.
async function follow(id) {
  for (;;) {
    status(`Generation ${id} is being made…`, "pending");
    const result = await app.callServerTool({ name: "pix_wait", arguments: { id, timeout_s: 20 } });
    if (result.isError) {
      status(errorText(result), "error");
      return showDetail(id);
    }
    if (result.structuredContent && result.structuredContent.status !== "PENDING") return showDetail(id);
  }
}

async function run(label, name, args) {
  if (view.busy) return;
  view.busy = true;
  try {
    status(`${label}…`, "pending");
    const result = await call(name, { ...args, wait: false });
    const made = result.structuredContent;
    if (made && made.status === "PENDING") await follow(made.id);
    else await showDetail(made.id);
    status(`${label}: generation ${made.id}.`, "ok");
  } catch (error) {
    status(String(error.message || error), "error");
  } finally {
    view.busy = false;
  }
}

function fact(label, value) {
  return value === null || value === undefined || value === "" ? null : el("div", {}, el("dt", {}, label), el("dd", {}, String(value)));
}

function cost(value) {
  if (value === null || value === undefined) return "unknown";
  return value === 0 ? "free" : `$${Number(value).toFixed(value < 0.1 ? 3 : 2)}`;
}

async function showDetail(id) {
  const gen = (await call("get_generation", { id })).structuredContent;
  view.current = gen;
  const main = $("main");
  main.replaceChildren();
  const figure = el("figure", { class: "stage" });
  const params = gen.parameters || {};
  const size = params.width && params.height ? `${params.width} × ${params.height}` : null;
  main.append(...[
    figure,
    el("section", { class: "facts", "aria-label": "About this image" },
      el("p", { class: "prompt", id: "prompt-text" }, gen.prompt || "(no prompt)"),
      el("dl", {},
        fact("Generation", `#${gen.id}`), fact("Status", gen.status), fact("Model", gen.model),
        fact("Operation", (gen.operation || "").replace("_", " ")), fact("Size", size), fact("Seed", params.seed),
        fact("Cost", cost(gen.cost_usd)))),
    chain(gen),
  ].filter(Boolean));
  if (gen.status === "PENDING") {
    figure.append(el("p", { class: "pending", id: "pending" }, "Still being made…"));
    return follow(gen.id);
  }
  if (!gen.resource_uri) {
    figure.append(el("p", { class: "error" }, gen.error || `No image (${gen.status}).`));
    return;
  }
  const src = await imageData(gen.id, "display");
  const img = el("img", { id: "image", src, alt: (gen.prompt || "Generated image").slice(0, 200) });
  const canvas = el("canvas", { id: "mask", class: "mask", hidden: true, "aria-label": "Paint the area to repaint" });
  figure.append(el("div", { class: "frame" }, img, canvas));
  main.append(actions(gen, img, canvas));
}

function chain(gen) {
  const links = [];
  if (gen.parent) links.push(el("button", { class: "link", "data-id": gen.parent.id, on: { click: () => showDetail(gen.parent.id) } },
    `Made from #${gen.parent.id} (${gen.parent.operation.replace("_", " ")})`));
  for (const child of gen.children || []) links.push(el("button", { class: "link", "data-id": child.id,
    on: { click: () => showDetail(child.id) } }, `#${child.id} ${child.operation.replace("_", " ")}`));
  return links.length ? el("nav", { class: "chain", "aria-label": "Lineage" }, links) : null;
}

function actions(gen, img, canvas) {
  const prompt = el("textarea", { id: "edit-prompt", rows: 2, "aria-label": "Prompt" });
  prompt.value = gen.prompt || "";
  const seed = el("input", { id: "edit-seed", type: "number", min: 0, step: 1, "aria-label": "Seed",
    placeholder: "seed" });
  if (gen.parameters && gen.parameters.seed !== undefined) seed.value = gen.parameters.seed;
  const model = el("select", { id: "edit-model", "aria-label": "Model" },
    el("option", { value: "" }, "same model"), ...["sdxl", "sdxl-lightning", "flux-schnell"].map((m) => el("option", { value: m }, m)));
  const overrides = () => {
    const args = { id: gen.id };
    if (prompt.value.trim() && prompt.value !== gen.prompt) args.prompt = prompt.value.trim();
    if (seed.value !== "" && Number(seed.value) !== (gen.parameters || {}).seed) args.seed = Number(seed.value);
    if (model.value) args.model = model.value;
    return args;
  };
  const button = (id, label, fn) => el("button", { id, type: "button", on: { click: fn } }, label);
  const generate = gen.operation === "generate";
  const inpaintPrompt = el("input", { id: "inpaint-prompt", type: "text", placeholder: "What the painted area should show",
    "aria-label": "Inpaint prompt" });
  const painter = maskPainter(img, canvas);
  const inpaintBox = el("div", { id: "inpaint-box", class: "row", hidden: true }, inpaintPrompt,
    button("inpaint-apply", "Repaint the painted area", async () => {
      const mask = painter.png();
      if (!mask) return status("Paint over the part to repaint first.", "error");
      if (!inpaintPrompt.value.trim()) return status("Say what the painted area should show.", "error");
      await run("Inpainting", "pix_app_inpaint", { image: gen.id, mask, prompt: inpaintPrompt.value.trim() });
    }),
    button("inpaint-clear", "Clear", () => painter.clear()));
  return el("section", { class: "actions", "aria-label": "Actions" },
    generate ? el("div", { class: "row" }, prompt) : null,
    generate ? el("div", { class: "row" }, seed, model,
      button("regenerate", "Regenerate", () => run("Regenerating", "pix_regenerate", overrides())),
      button("variation", "Variation", () => run("Making a variation", "pix_regenerate",
        { id: gen.id, seed: Math.floor(Math.random() * 4294967295) }))) : null,
    el("div", { class: "row" },
      button("upscale-2", "Upscale ×2", () => run("Upscaling", "pix_upscale", { image: gen.id, scale: 2 })),
      button("upscale-4", "Upscale ×4", () => run("Upscaling", "pix_upscale", { image: gen.id, scale: 4 })),
      button("remove-background", "Remove background", () => run("Removing the background", "pix_remove_background", { image: gen.id })),
      button("outpaint", "Outpaint", () => run("Outpainting", "pix_outpaint", { image: gen.id })),
      button("inpaint", "Inpaint…", () => {
        const open = inpaintBox.hidden;
        inpaintBox.hidden = !open;
        canvas.hidden = !open;
        if (open) painter.reset();
      })),
    inpaintBox,
    el("div", { class: "row" },
      button("download", "Download", async () => {
        const result = await app.downloadFile({ contents: [{ type: "resource_link", uri: gen.resource_uri,
          name: `pixazo-${gen.id}`, mimeType: gen.image_mime || "image/png" }] });
        status(result && result.isError ? "The download was not started." : "Download started.", result && result.isError ? "error" : "ok");
      }),
      button("choose", "Choose this image", async () => {
        const text = `I choose generation ${gen.id} (${gen.resource_uri}).`;
        await app.updateModelContext({ content: [{ type: "text", text: `The person chose generation ${gen.id}.` }] });
        await app.sendMessage({ role: "user", content: [{ type: "text", text }] });
        status(`Told the assistant: generation ${gen.id}.`, "ok");
      })));
}

// Painting the inpainting mask with a pointer or a finger: white where the image is repainted.
function maskPainter(img, canvas) {
  let painted = false;
  const context = () => canvas.getContext("2d");
  const reset = () => {
    canvas.width = img.naturalWidth || img.width;
    canvas.height = img.naturalHeight || img.height;
    context().clearRect(0, 0, canvas.width, canvas.height);
    painted = false;
  };
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  let down = false;
  canvas.addEventListener("pointerdown", (event) => { down = true; canvas.setPointerCapture(event.pointerId); paint(event); });
  canvas.addEventListener("pointermove", (event) => { if (down) paint(event); });
  canvas.addEventListener("pointerup", () => { down = false; });
  function paint(event) {
    const [x, y] = at(event);
    const ctx = context();
    ctx.fillStyle = "rgba(255, 64, 64, 0.55)";
    ctx.beginPath();
    ctx.arc(x, y, Math.max(8, canvas.width / 24), 0, Math.PI * 2);
    ctx.fill();
    painted = true;
  }
  return {
    reset,
    clear: reset,
    // The mask PNG: white where painted, black elsewhere, at the displayed image's pixel size.
    png() {
      if (!painted) return null;
      const out = document.createElement("canvas");
      out.width = canvas.width;
      out.height = canvas.height;
      const ctx = out.getContext("2d");
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, out.width, out.height);
      const source = context().getImageData(0, 0, canvas.width, canvas.height);
      const target = ctx.getImageData(0, 0, out.width, out.height);
      for (let i = 0; i < source.data.length; i += 4) {
        if (source.data[i + 3] > 0) target.data[i] = target.data[i + 1] = target.data[i + 2] = 255;
      }
      ctx.putImageData(target, 0, 0);
      return out.toDataURL("image/png").split(",")[1];
    },
  };
}

async function showGrid(page) {
  view.current = null;
  const main = $("main");
  const grid = el("ul", { class: "grid", id: "grid" });
  main.replaceChildren(grid);
  if (!page.generations.length) grid.append(el("li", { class: "empty" }, "No generations yet."));
  for (const gen of page.generations) {
    const open = el("button", { class: "card", type: "button", "data-id": gen.id, on: { click: () => showDetail(gen.id) },
      "aria-label": `Generation ${gen.id}: ${(gen.prompt || "").slice(0, 120)}` });
    const item = el("li", {}, open);
    grid.append(item);
    if (gen.resource_uri) {
      imageData(gen.id, "thumb").then((src) => open.prepend(el("img", { src, alt: (gen.prompt || "").slice(0, 200) })))
        .catch(() => open.prepend(el("span", { class: "noimg" }, "image unavailable")));
    } else {
      open.prepend(el("span", { class: "noimg" }, gen.status));
    }
    open.append(el("span", { class: "caption" }, `#${gen.id} · ${gen.status}`));
  }
}

async function show(result) {
  const data = result && result.structuredContent;
  if (!data) {
    if (result && result.isError) status(errorText(result), "error");
    return;
  }
  try {
    if (Array.isArray(data.generations)) await showGrid(data);
    else if (typeof data.id === "number") await showDetail(data.id);
  } catch (error) {
    status(String(error.message || error), "error");
  }
}

// The person's own image: read here, sent through the host to the server (no other origin involved).
$("upload-file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  status(`Uploading ${file.name}…`, "pending");
  try {
    const data = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",")[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
    const result = await call("pix_app_upload", { data, name: file.name });
    await showDetail(result.structuredContent.id);
    status(`Uploaded as generation ${result.structuredContent.id}.`, "ok");
  } catch (error) {
    status(String(error.message || error), "error");
  }
  event.target.value = "";
});

app.ontoolresult = (result) => { show(result); };
app.onhostcontextchanged = (context) => applyTheme(context);
app.connect().then(() => applyTheme(app.getHostContext()));
