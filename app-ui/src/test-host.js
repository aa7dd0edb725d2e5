// A test host for the browser tests: the official host side of MCP Apps (AppBridge) rendering
// ui://pixazo/app in a sandboxed iframe, as a chat client does. The test (Python, Playwright) gives it
// the app's HTML and the tool result, and answers the app's server requests through exposed
// functions that call the real server with the MCP SDK's client. Not shipped.
import { AppBridge, PostMessageTransport } from "@modelcontextprotocol/ext-apps/app-bridge";

window.downloads = [];
window.messages = [];
window.contexts = [];

window.startHost = async (appHtml, toolArguments, toolResult, theme) => {
  const iframe = document.createElement("iframe");
  iframe.id = "app";
  iframe.title = "Pixazo app";
  iframe.setAttribute("sandbox", "allow-scripts");
  document.getElementById("slot").append(iframe);
  const bridge = new AppBridge(null, { name: "pixazo-test-host", version: "1.0.0" }, {
    serverTools: {}, serverResources: {}, downloadFile: {}, openLinks: {}, logging: {},
    updateModelContext: { text: {} }, message: { text: {} },
  }, { hostContext: { theme, displayMode: "inline", platform: "web" } });
  const forward = (fn) => async (params) => JSON.parse(await fn(JSON.stringify(params)));
  bridge.oncalltool = forward(window.hostCallTool);
  bridge.onreadresource = forward(window.hostReadResource);
  bridge.ondownloadfile = async (params) => { window.downloads.push(params); return {}; };
  bridge.onmessage = async (params) => { window.messages.push(params); return {}; };
  bridge.onupdatemodelcontext = async (params) => { window.contexts.push(params); return {}; };
  bridge.oninitialized = async () => {
    await bridge.sendToolInput({ arguments: toolArguments });
    await bridge.sendToolResult(toolResult);
  };
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  iframe.srcdoc = appHtml;
  window.bridge = bridge;
};

window.setTheme = (theme) => window.bridge.setHostContext({ theme, displayMode: "inline", platform: "web" });
