// run.mjs drives a kiln through the real @saintno/comfyui-sdk client, the
// way an application written for ComfyUI would: ComfyApi connects (HTTP
// ping, then the WebSocket), a PromptBuilder maps the workflow's inputs and
// its output node, and a CallWrapper queues the prompt and follows it over
// the WebSocket to its output. The output image is fetched through /view
// and written to --out.
//
// It prints one JSON summary on stdout and exits 0 when the prompt
// finished, 1 otherwise. tests/comfy_client_test.go runs it:
//
//	node tests/comfyclient/run.mjs --host http://127.0.0.1:8188 \
//	    --workflow examples/workflows/salad-comfyui-api__sd1.5-txt2img.api.json \
//	    --steps 4 --seed 7 --out /tmp/out.png
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ComfyApi, CallWrapper, PromptBuilder } from "@saintno/comfyui-sdk";

const { values: args } = parseArgs({
  options: {
    host: { type: "string" },
    workflow: { type: "string" },
    steps: { type: "string", default: "4" },
    seed: { type: "string", default: "1" },
    out: { type: "string" },
    timeout: { type: "string", default: "60000" },
  },
});
for (const name of ["host", "workflow", "out"]) {
  if (!args[name]) {
    console.error(`run.mjs: --${name} is required`);
    process.exit(2);
  }
}

const summary = {
  client_id: "",
  prompt_id: "",
  pending: false,
  started: false,
  // Progress as the CallWrapper reports it (onProgress) and as the raw
  // socket delivered it (ComfyApi "progress" events): the wrapper starts
  // listening only once the prompt is executing, so it may see fewer.
  progress: [],
  socket_progress: [],
  events: [],
  outputs: null,
  image: null,
  error: null,
};

function finish(code) {
  process.stdout.write(JSON.stringify(summary) + "\n");
  // The client keeps timers and a socket open; end the process here.
  process.exit(code);
}

const timer = setTimeout(() => {
  summary.error = `timed out after ${args.timeout} ms`;
  finish(1);
}, Number(args.timeout));

// Find the nodes by class rather than by id, so that any txt2img graph in
// ComfyUI's API format works.
const graph = JSON.parse(readFileSync(args.workflow, "utf8"));
const idOf = (pred) => Object.keys(graph).find((id) => pred(graph[id].class_type));
const samplerID = idOf((c) => c.startsWith("KSampler"));
const saveID = idOf((c) => c === "SaveImage");
if (!samplerID || !saveID) {
  summary.error = "the workflow needs a KSampler and a SaveImage node";
  finish(2);
}

const api = new ComfyApi(args.host, undefined, { wsTimeout: 10000 });
for (const type of ["status", "execution_start", "execution_cached", "executing", "progress", "executed",
  "execution_success", "execution_error", "execution_interrupted"]) {
  api.on(type, (ev) => {
    const d = ev.detail ?? {};
    if (type === "status") {
      summary.events.push(type);
      return;
    }
    if (summary.prompt_id && d.prompt_id && d.prompt_id !== summary.prompt_id) {
      return;
    }
    summary.events.push(type);
    if (type === "progress") {
      summary.socket_progress.push({ value: d.value, max: d.max, node: d.node });
    }
  });
}

// init pings GET /prompt, then reads /system_stats and opens /ws; wait for
// the socket, or the first messages of the prompt could be missed.
const connected = new Promise((resolve, reject) => {
  api.on("connected", () => resolve());
  api.on("connection_error", (ev) => reject(new Error(`connection error: ${ev.detail}`)));
});
api.init(20, 250);
try {
  await connected;
  await api.waitForReady();
} catch (err) {
  summary.error = String(err);
  finish(1);
}
summary.client_id = api.id;

const builder = new PromptBuilder(graph, ["seed", "steps"], ["images"])
  .setInputNode("seed", `${samplerID}.inputs.seed`)
  .setInputNode("steps", `${samplerID}.inputs.steps`)
  .setOutputNode("images", saveID)
  .input("seed", Number(args.seed))
  .input("steps", Number(args.steps));

const result = await new CallWrapper(api, builder)
  .onPending((id) => {
    summary.pending = true;
    summary.prompt_id = id ?? "";
  })
  .onStart(() => {
    summary.started = true;
  })
  .onProgress((info) => {
    summary.progress.push({ value: info.value, max: info.max, node: info.node });
  })
  .onFailed((err) => {
    summary.error = `${err.name}: ${err.message}${err.cause ? " " + JSON.stringify(err.cause) : ""}`;
  })
  .run();

if (!result || !result.images) {
  summary.error ??= "the prompt finished without images";
  clearTimeout(timer);
  finish(1);
}
summary.outputs = result.images;

const info = result.images.images?.[0];
if (!info) {
  summary.error = "the output node listed no image";
  finish(1);
}
// getImage is the SDK's own /view call; read the headers with fetchApi.
const res = await api.fetchApi(
  `/view?filename=${encodeURIComponent(info.filename)}&type=${info.type}&subfolder=${encodeURIComponent(info.subfolder ?? "")}`
);
const blob = await api.getImage(info);
const bytes = Buffer.from(await blob.arrayBuffer());
writeFileSync(args.out, bytes);
summary.image = {
  filename: info.filename,
  subfolder: info.subfolder,
  type: info.type,
  status: res.status,
  content_type: res.headers.get("content-type"),
  bytes: bytes.length,
};
clearTimeout(timer);
finish(0);
