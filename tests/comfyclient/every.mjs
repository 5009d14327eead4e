// every.mjs drives a kiln through the real @saintno/comfyui-sdk client over
// several API-format workflows, one after another, as an application
// written for ComfyUI would: ComfyApi connects, a PromptBuilder names every
// SaveImage and PreviewImage node of the graph as an output, a CallWrapper
// queues the prompt and follows it to its end, and each image comes back
// through the SDK's own /view call (getImage).
//
// For each workflow it prints one JSON line on stdout: the prompt id, every
// WebSocket message of that prompt in the order the socket delivered it
// (type and node), and the images with their names and whether the bytes
// are a PNG. tests/comfy_clients_test.go runs it:
//
//	node every.mjs <http://host:port> <workflow.json>...
import { readFileSync } from "node:fs";
import { ComfyApi, CallWrapper, PromptBuilder } from "@saintno/comfyui-sdk";

const [host, ...files] = process.argv.slice(2);

// Every text message the socket delivers, in order; each prompt's are
// picked out by prompt id once its id is known.
const messages = [];
const api = new ComfyApi(host, undefined, { wsTimeout: 10000 });
api.on("all", (ev) => {
  const m = ev.detail ?? {};
  messages.push({ type: m.type, prompt_id: m.data?.prompt_id ?? null, node: m.data?.node ?? null });
});
const connected = new Promise((resolve, reject) => {
  api.on("connected", () => resolve());
  api.on("connection_error", (ev) => reject(new Error(`connection error: ${ev.detail}`)));
});
const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: "timed out" }));
  process.exit(1);
}, 120000);

try {
  api.init(20, 250);
  await connected;
  await api.waitForReady();
  for (const file of files) {
    const graph = JSON.parse(readFileSync(file, "utf8"));
    const outputs = Object.keys(graph).filter((id) => ["SaveImage", "PreviewImage"].includes(graph[id].class_type));
    let builder = new PromptBuilder(graph, [], outputs);
    for (const id of outputs) {
      builder = builder.setOutputNode(id, id);
    }
    let promptID = "";
    let failure = null;
    const result = await new CallWrapper(api, builder)
      .onPending((id) => {
        promptID = id ?? "";
      })
      .onFailed((err) => {
        failure = `${err.name}: ${err.message}${err.cause ? " " + JSON.stringify(err.cause) : ""}`;
      })
      .run();
    if (!result || failure) {
      console.log(JSON.stringify({ file, prompt_id: promptID, error: failure ?? "no result" }));
      process.exitCode = 1;
      continue;
    }
    const images = [];
    for (const id of outputs) {
      for (const info of result[id]?.images ?? []) {
        const blob = await api.getImage(info);
        const bytes = Buffer.from(await blob.arrayBuffer());
        images.push({ node: id, filename: info.filename, subfolder: info.subfolder ?? "", type: info.type,
          bytes: bytes.length, png: bytes.subarray(0, 8).toString("hex") === "89504e470d0a1a0a" });
      }
    }
    // The prompt's closing "executing" (node null) may follow the result.
    const deadline = Date.now() + 5000;
    const closed = () => messages.some((m) => m.prompt_id === promptID && m.type === "executing" && m.node === null);
    while (!closed() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    console.log(JSON.stringify({ file, prompt_id: promptID, images,
      messages: messages.filter((m) => m.prompt_id === promptID).map(({ type, node }) => ({ type, node })) }));
  }
} catch (err) {
  console.log(JSON.stringify({ error: String((err && err.stack) || err) }));
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  api.destroy?.();
  // The client keeps timers and a socket open; end the process here.
  setTimeout(() => process.exit(process.exitCode ?? 0), 10);
}
