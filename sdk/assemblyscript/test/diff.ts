// The AssemblyScript half of internal/policy's differential test
// (TestAssemblyScriptSDKMatchesGo): for every kind it reads every field of
// the input through the SDK's accessors into a digest, and answers with a
// decision made of every answer field. The Go half does the same through
// the Go SDK; the two answers must be the same bytes. The decisions are
// not meant to be good, only to use every field.
export { kiln_abi_v1_3, kiln_buffer } from "../assembly/kiln";
import {
  Input, Job, Worker, Node, KIND_EVICTION, KIND_SCHEDULING, KIND_BATCHING, KIND_BALANCING, KIND_ROUTING, NO_WORKER,
  NO_NODE, STATUS_ERROR, answerEviction, answerScheduling, answerBatching, answerBalancing, answerRouting, answerStatus,
  setState,
} from "../assembly/kiln";

let h: u64 = 0;
function mix(x: u64): void { h = (h ^ x) * 0x100000001b3; }
function b(x: bool): u64 { return x ? 1 : 0; }

function header(inp: Input): void {
  h = 0xcbf29ce484222325;
  mix(<u64>inp.nowNs);
  for (let i = 0; i < 4; i++) mix(inp.state(i));
  mix(inp.paramCount);
  for (let i: u32 = 0; i < inp.paramCount; i++) mix(reinterpret<u64>(inp.param(i, 0)));
}

function models(inp: Input): void {
  mix(inp.nModels);
  for (let i: u32 = 0; i < inp.nModels; i++) { const m = inp.model(i); mix(m.bytes); mix(<u64>m.loadCostNs); }
}

function job(inp: Input, j: Job): void {
  mix(j.seq); mix(<u64>j.ageNs); mix(<u64>(j.hasDeadline ? j.slackNs : 0)); mix(<u64>j.estCostNs); mix(j.vram);
  mix(j.batchVRAM); mix(j.priorityClass); mix(b(j.hasDeadline)); mix(b(j.atStepBoundary)); mix(j.batchKey);
  mix(j.attempts); mix(j.worker); mix(j.modelCount);
  for (let k: u32 = 0; k < j.modelCount; k++) mix(inp.poolAt(j.modelsOffset + k));
}

function worker(inp: Input, w: Worker): void {
  mix(w.freeVRAM); mix(w.usableVRAM); mix(<u64>w.waitNs); mix(w.h2dBytesPerS); mix(w.device); mix(b(w.idle));
  mix(b(w.degraded)); mix(w.deviceBusy); mix(w.residentCount);
  for (let k: u32 = 0; k < w.residentCount; k++) mix(inp.poolAt(w.residentOffset + k));
}

function workers(inp: Input): void {
  mix(inp.nWorkers);
  for (let i: u32 = 0; i < inp.nWorkers; i++) worker(inp, inp.worker(i));
}

const ids = new StaticArray<u32>(4096);
const ids2 = new StaticArray<u32>(4096);
const tagIDs = new StaticArray<u32>(4096);
const tagVals = new StaticArray<u64>(4096);

export function kiln_evict(len: i32): u64 {
  const inp = Input.read(len, KIND_EVICTION);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_EVICTION, inp);
  header(inp);
  mix(inp.need); mix(inp.free); mix(inp.nEntries);
  let nv = 0, nt = 0;
  for (let i: u32 = 0; i < inp.nEntries; i++) {
    const e = inp.entry(i);
    mix(e.bytes); mix(<u64>e.sinceUseNs); mix(<u64>e.sinceInsertNs); mix(<u64>e.loadCostNs); mix(e.tag);
    mix(e.model); mix(e.worker); mix(e.hits); mix(b(e.pinned)); mix(reinterpret<u64>(inp.entryDemand(i)));
    if (!e.pinned) unchecked(ids[nv++] = i);
    unchecked(tagIDs[nt] = i); unchecked(tagVals[nt++] = e.tag + <u64>i + 1);
  }
  mix(inp.nGhosts);
  for (let i: u32 = 0; i < inp.nGhosts; i++) { const g = inp.ghost(i); mix(<u64>g.agoNs); mix(g.model); }
  mix(inp.nWanted);
  let np = 0;
  for (let i: u32 = 0; i < inp.nWanted; i++) {
    const w = inp.wantedModel(i);
    mix(w.bytes); mix(<u64>w.loadCostNs); mix(w.model); mix(w.waiting);
    if (w.waiting >= 2) unchecked(ids2[np++] = i);
  }
  // Victims in reverse order: the order must survive the encoding.
  for (let i = 0; i < nv / 2; i++) { const t = unchecked(ids[i]); unchecked(ids[i] = ids[nv - 1 - i]); unchecked(ids[nv - 1 - i] = t); }
  const r = answerEviction(inp, ids, nv, ids2, np, tagIDs, tagVals, nt);
  setState(0, h); setState(3, inp.state(3) + 1);
  return r;
}

export function kiln_schedule(len: i32): u64 {
  const inp = Input.read(len, KIND_SCHEDULING);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_SCHEDULING, inp);
  header(inp); models(inp);
  mix(inp.nJobs);
  for (let i: u32 = 0; i < inp.nJobs; i++) { job(inp, inp.job(i)); unchecked(ids[i] = inp.nJobs - 1 - i); }
  mix(inp.nRunning);
  let np = 0;
  for (let i: u32 = 0; i < inp.nRunning; i++) {
    const j = inp.runningJob(i);
    job(inp, j);
    if (j.atStepBoundary) unchecked(ids2[np++] = i);
  }
  workers(inp);
  const r = answerScheduling(inp, ids, inp.nJobs, ids2, np);
  setState(0, h); setState(3, inp.state(3) + 1);
  return r;
}

export function kiln_batch(len: i32): u64 {
  const inp = Input.read(len, KIND_BATCHING);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_BATCHING, inp);
  header(inp); models(inp);
  mix(inp.lead); mix(inp.nJobs);
  for (let i: u32 = 0; i < inp.nJobs; i++) job(inp, inp.job(i));
  workers(inp);
  const key = inp.job(inp.lead).batchKey;
  let n = 0;
  unchecked(ids[n++] = inp.lead);
  for (let i: u32 = 0; i < inp.nJobs; i++) if (i != inp.lead && key != 0 && inp.job(i).batchKey == key) unchecked(ids[n++] = i);
  const r = answerBatching(inp, ids, n, <i64>(h & 0xffff));
  setState(0, h); setState(3, inp.state(3) + 1);
  return r;
}

export function kiln_balance(len: i32): u64 {
  const inp = Input.read(len, KIND_BALANCING);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_BALANCING, inp);
  header(inp); models(inp);
  job(inp, inp.job(0));
  workers(inp);
  let best: u32 = NO_WORKER;
  for (let i: u32 = 0; i < inp.nWorkers; i++) if (inp.worker(i).idle) best = i;
  const r = answerBalancing(inp, best);
  setState(0, h); setState(3, inp.state(3) + 1);
  return r;
}

function tier(inp: Input, off: u32, n: u32): void {
  mix(n);
  for (let k: u32 = 0; k < n; k++) mix(inp.poolAt(off + k));
}

function node(inp: Input, n: Node): void {
  mix(n.freeVRAM); mix(n.usableVRAM); mix(<u64>n.waitNs); mix(<u64>n.delayNs); mix(n.h2dBytesPerS);
  mix(n.diskBytesPerS); mix(n.remoteBytesPerS); mix(n.queued); mix(n.running); mix(n.workers); mix(n.idleWorkers);
  mix(b(n.healthy));
  tier(inp, n.vramOffset, n.vramCount); tier(inp, n.ramOffset, n.ramCount); tier(inp, n.diskOffset, n.diskCount);
}

export function kiln_route(len: i32): u64 {
  const inp = Input.read(len, KIND_ROUTING);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_ROUTING, inp);
  header(inp); models(inp);
  mix(inp.random);
  job(inp, inp.job(0));
  mix(inp.nNodes);
  let best: u32 = NO_NODE;
  for (let i: u32 = 0; i < inp.nNodes; i++) {
    const n = inp.node(i);
    node(inp, n);
    if (n.healthy) best = i;
  }
  const r = answerRouting(inp, best);
  setState(0, h); setState(3, inp.state(3) + 1);
  return r;
}
