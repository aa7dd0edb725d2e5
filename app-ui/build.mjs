// Builds the in-chat app into one self-contained HTML file that the Python package ships
// (app/protocol/ui/pixazo-app.html), and the test host the browser tests load (dist/, not shipped).
// Deterministic: the same lockfile and sources give the same bytes (CI rebuilds and compares).
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const options = { bundle: true, minify: true, format: "esm", platform: "browser", target: "es2022", write: false,
  legalComments: "none", charset: "utf8" };

async function page(entry, template, out) {
  const result = await build({ ...options, entryPoints: [join(here, "src", entry)] });
  // A script in an HTML file must not contain its own end tag.
  const script = result.outputFiles[0].text.replaceAll("</script", "<\\/script");
  const html = readFileSync(join(here, "src", template), "utf8").replace("/*APP_SCRIPT*/", () => script);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, html);
  console.log(`${out}: ${Buffer.byteLength(html)} bytes`);
}

await page("app.js", "app.html", join(here, "..", "app", "protocol", "ui", "pixazo-app.html"));
await page("test-host.js", "test-host.html", join(here, "dist", "test-host.html"));
