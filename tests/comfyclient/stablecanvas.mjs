// Runs @stable-canvas/comfyui-client, unchanged, against a kiln: connect,
// then Client.enqueue each API-format workflow given, which queues it and
// follows it over the WebSocket, gathering every image the prompt yields
// (the binary frames it receives and the saved images of its history).
// Prints one JSON summary per workflow on stdout.
//
//	node stablecanvas.mjs <host:port> <client id> <workflow.json>...
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { Client } from "@stable-canvas/comfyui-client";

const [host, clientId, ...files] = process.argv.slice(2);
const client = new Client({ api_host: host, clientId, WebSocket, fetch });
client.connect();
try {
  await client.getSystemStats();
  for (const file of files) {
    const workflow = JSON.parse(readFileSync(file, "utf8"));
    const out = await client.enqueue(workflow, {});
    const images = [];
    for (const img of out.images) {
      if (img.type === "buff") {
        images.push({ type: img.type, mime: img.mime, bytes: img.data.byteLength,
          png: Buffer.from(img.data.slice(0, 8)).toString("hex") === "89504e470d0a1a0a" });
      } else {
        const resp = await fetch(img.data);
        const body = Buffer.from(await resp.arrayBuffer());
        images.push({ type: img.type, url: img.data, status: resp.status, bytes: body.length,
          png: body.subarray(0, 8).toString("hex") === "89504e470d0a1a0a" });
      }
    }
    console.log(JSON.stringify({ file, prompt_id: out.prompt_id, images }));
  }
} catch (err) {
  console.log(JSON.stringify({ error: String(err && err.stack || err) }));
  process.exitCode = 1;
} finally {
  client.close();
}
