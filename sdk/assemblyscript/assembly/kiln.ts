// kiln policy SDK for AssemblyScript — the ABI of sdk/policy/ABI.md, of
// the version ABI_MAJOR.ABI_MINOR below.
//
// A policy module's entry file re-exports the ABI plumbing and exports the
// hook of its kind:
//
//   export { kiln_abi_v1_2, kiln_buffer } from "<path>/sdk/assemblyscript/assembly/kiln";
//   import { Input, KIND_BALANCING, NO_WORKER, answerBalancing } from "<path>/sdk/assemblyscript/assembly/kiln";
//   export function kiln_balance(len: i32): u64 {
//     const inp = Input.read(len, KIND_BALANCING);
//     const vram = inp.job(0).vram; // the job to place
//     for (let i: u32 = 0; i < inp.nWorkers; i++) {
//       const w = inp.worker(i); // idle, and able to hold the job (0: size unknown)
//       if (w.idle && (w.usableVRAM == 0 || vram <= w.usableVRAM)) return answerBalancing(inp, i);
//     }
//     return answerBalancing(inp, NO_WORKER); // NO_DECISION
//   }
//
// Every record the Go SDK decodes has an accessor here (Input.model, job,
// runningJob, worker, node, entry, ghost, wantedModel, poolAt; need, free
// and random), and every answer an encoder (answerEviction with victims,
// prefetch and tags; answerScheduling with preemptions; answerBatching with
// a wait; answerBalancing; answerRouting). internal/policy's TestAssemblyScriptSDKMatchesGo checks
// that both SDKs read and write the same bytes for every kind.
//
// Inputs are read in place from the buffer the host wrote (no decoding, no
// allocation); answers are written into one reused output buffer. Build
// with `asc --runtime stub`: the SDK allocates only when a buffer must grow.

// Kinds.
export const KIND_EVICTION: u32 = 1;
export const KIND_SCHEDULING: u32 = 2;
export const KIND_BATCHING: u32 = 3;
export const KIND_BALANCING: u32 = 4;
export const KIND_ROUTING: u32 = 5; // since ABI 1.2

// Statuses.
export const STATUS_OK: u32 = 0;
export const STATUS_NO_DECISION: u32 = 1;
export const STATUS_UNSUPPORTED: u32 = 2;
export const STATUS_ERROR: u32 = 3;

export const NO_WORKER: u32 = 0xFFFFFFFF;
export const NO_NODE: u32 = 0xFFFFFFFF;

export const HEADER_SIZE: i32 = 56;

// The version, the markers, the record sizes and the record accessors are
// generated from the Go SDK's record types (sdk/policy/types.go) by
// `go generate ./internal/abigen`; edit those, not the sections below.

// abigen:begin version
export const ABI_MAJOR: u32 = 1;
export const ABI_MINOR: u32 = 3;

// The ABI version markers: the host reads the name of the one a module
// exports before it instantiates it. Re-export the marker of the version
// whose fields your module reads (the newest, for a new module): a host
// refuses a module of a newer minor than its own.
export function kiln_abi_v1_0(): void {}
export function kiln_abi_v1_1(): void {}
export function kiln_abi_v1_2(): void {}
export function kiln_abi_v1_3(): void {}
// abigen:end

let inBuf: usize = 0;
let inCap: i32 = 0;

// kiln_buffer returns a buffer of at least size bytes for the host's input.
export function kiln_buffer(size: i32): usize {
  if (size > inCap) {
    inBuf = heap.alloc(<usize>size);
    inCap = size;
  }
  return inBuf;
}

@external("kiln", "log")
declare function hostLog(level: i32, ptr: usize, len: i32): void;

// log sends a message to kiln's log (0 debug … 3 error).
export function log(level: i32, msg: string): void {
  const utf8 = String.UTF8.encode(msg);
  hostLog(level, changetype<usize>(utf8), utf8.byteLength);
}

// abigen:begin records
// Record sizes.
export const MODEL_SIZE: i32 = 16;
export const JOB_SIZE: i32 = 80;
export const WORKER_SIZE: i32 = 56;
export const ENTRY_SIZE: i32 = 56;
export const GHOST_SIZE: i32 = 16;
export const WANTED_SIZE: i32 = 24;
export const NODE_SIZE: i32 = 104;

// Model is what the input says about one model; models are named by
// their index in the input's Models table.
@unmanaged
export class Model {
  get bytes(): u64 { return load<u64>(changetype<usize>(this)); }
  get loadCostNs(): i64 { return load<i64>(changetype<usize>(this), 8); }
}

// Job is a queued or running job.
@unmanaged
export class Job {
  get seq(): u64 { return load<u64>(changetype<usize>(this)); }
  get ageNs(): i64 { return load<i64>(changetype<usize>(this), 8); }
  get slackNs(): i64 { return load<i64>(changetype<usize>(this), 16); }
  get estCostNs(): i64 { return load<i64>(changetype<usize>(this), 24); }
  get vram(): u64 { return load<u64>(changetype<usize>(this), 32); }
  get batchVRAM(): u64 { return load<u64>(changetype<usize>(this), 40); }
  get priorityClass(): u32 { return load<u32>(changetype<usize>(this), 48); }
  get hasDeadline(): bool { return (load<u32>(changetype<usize>(this), 52) & 1) != 0; }
  get atStepBoundary(): bool { return (load<u32>(changetype<usize>(this), 52) & 2) != 0; }
  get batchKey(): u32 { return load<u32>(changetype<usize>(this), 56); }
  get attempts(): u32 { return load<u32>(changetype<usize>(this), 60); }
  get modelsOffset(): u32 { return load<u32>(changetype<usize>(this), 64); }
  get modelCount(): u32 { return load<u32>(changetype<usize>(this), 68); }
  get worker(): u32 { return load<u32>(changetype<usize>(this), 72); }
}

// Worker is one worker process and its device.
@unmanaged
export class Worker {
  get freeVRAM(): u64 { return load<u64>(changetype<usize>(this)); }
  get usableVRAM(): u64 { return load<u64>(changetype<usize>(this), 8); }
  get waitNs(): i64 { return load<i64>(changetype<usize>(this), 16); }
  get h2dBytesPerS(): u64 { return load<u64>(changetype<usize>(this), 24); }
  get device(): u32 { return load<u32>(changetype<usize>(this), 32); }
  get idle(): bool { return (load<u32>(changetype<usize>(this), 36) & 1) != 0; }
  get degraded(): bool { return (load<u32>(changetype<usize>(this), 36) & 2) != 0; }
  get deviceBusy(): u32 { return load<u32>(changetype<usize>(this), 40); }
  get residentOffset(): u32 { return load<u32>(changetype<usize>(this), 44); }
  get residentCount(): u32 { return load<u32>(changetype<usize>(this), 48); }
}

// Entry is one cached model an eviction policy may drop.
@unmanaged
export class Entry {
  get bytes(): u64 { return load<u64>(changetype<usize>(this)); }
  get sinceUseNs(): i64 { return load<i64>(changetype<usize>(this), 8); }
  get sinceInsertNs(): i64 { return load<i64>(changetype<usize>(this), 16); }
  get loadCostNs(): i64 { return load<i64>(changetype<usize>(this), 24); }
  get tag(): u64 { return load<u64>(changetype<usize>(this), 32); }
  get model(): u32 { return load<u32>(changetype<usize>(this), 40); }
  get worker(): u32 { return load<u32>(changetype<usize>(this), 44); }
  get hits(): u32 { return load<u32>(changetype<usize>(this), 48); }
  get pinned(): bool { return (load<u32>(changetype<usize>(this), 52) & 1) != 0; }
}

// Ghost is a model evicted recently (S3-FIFO's ghost queue, kept by the host).
@unmanaged
export class Ghost {
  get agoNs(): i64 { return load<i64>(changetype<usize>(this)); }
  get model(): u32 { return load<u32>(changetype<usize>(this), 8); }
}

// Wanted is a model that queued jobs need and that is not cached here: a
// candidate for prefetch.
@unmanaged
export class Wanted {
  get bytes(): u64 { return load<u64>(changetype<usize>(this)); }
  get loadCostNs(): i64 { return load<i64>(changetype<usize>(this), 8); }
  get model(): u32 { return load<u32>(changetype<usize>(this), 16); }
  get waiting(): u32 { return load<u32>(changetype<usize>(this), 20); }
}

// Node is one node of a cluster as a routing policy sees it: what it holds
// in each tier, how busy it is, how fast it loads, and whether it is
// healthy. A live node publishes it; the simulator fills it from its nodes.
@unmanaged
export class Node {
  get freeVRAM(): u64 { return load<u64>(changetype<usize>(this)); }
  get usableVRAM(): u64 { return load<u64>(changetype<usize>(this), 8); }
  get waitNs(): i64 { return load<i64>(changetype<usize>(this), 16); }
  get delayNs(): i64 { return load<i64>(changetype<usize>(this), 24); }
  get h2dBytesPerS(): u64 { return load<u64>(changetype<usize>(this), 32); }
  get diskBytesPerS(): u64 { return load<u64>(changetype<usize>(this), 40); }
  get remoteBytesPerS(): u64 { return load<u64>(changetype<usize>(this), 48); }
  get queued(): u32 { return load<u32>(changetype<usize>(this), 56); }
  get running(): u32 { return load<u32>(changetype<usize>(this), 60); }
  get workers(): u32 { return load<u32>(changetype<usize>(this), 64); }
  get idleWorkers(): u32 { return load<u32>(changetype<usize>(this), 68); }
  get healthy(): bool { return (load<u32>(changetype<usize>(this), 72) & 1) != 0; }
  get vramOffset(): u32 { return load<u32>(changetype<usize>(this), 76); }
  get vramCount(): u32 { return load<u32>(changetype<usize>(this), 80); }
  get ramOffset(): u32 { return load<u32>(changetype<usize>(this), 84); }
  get ramCount(): u32 { return load<u32>(changetype<usize>(this), 88); }
  get diskOffset(): u32 { return load<u32>(changetype<usize>(this), 92); }
  get diskCount(): u32 { return load<u32>(changetype<usize>(this), 96); }
}
// abigen:end

// Input is a view of the input in the buffer. It checks the version and the
// kind; valid is false when they do not match or the input is too short.
// Get it with Input.read: there is one Input per module, reset by each
// call, because `new` allocates and the stub runtime never frees, so an
// Input made per call would grow the module's memory on every decision
// until it hit the host's cap.
export class Input {
  base: usize = 0;
  len: i32 = 0;
  body: usize = 0;
  valid: bool = false;
  // Section addresses and counts, set by the kind's constructor below.
  models: usize = 0; nModels: u32 = 0;
  jobs: usize = 0; nJobs: u32 = 0;       // scheduling: queued; batching: jobs; balancing: the job
  running: usize = 0; nRunning: u32 = 0;
  workers: usize = 0; nWorkers: u32 = 0;
  entries: usize = 0; nEntries: u32 = 0;
  ghosts: usize = 0; nGhosts: u32 = 0;
  wanted: usize = 0; nWanted: u32 = 0;
  demand: usize = 0; nDemand: u32 = 0;  // eviction, since 1.3: per entry
  nodes: usize = 0; nNodes: u32 = 0;     // routing
  pool: usize = 0; nPool: u32 = 0;
  lead: u32 = 0;

  // read returns the module's Input, reset to the len bytes the host wrote
  // for a call of kind.
  static read(len: i32, kind: u32): Input {
    let inp = shared;
    if (inp == null) {
      inp = new Input();
      shared = inp;
    }
    inp.reset(len, kind);
    return inp;
  }

  reset(len: i32, kind: u32): void {
    this.models = 0; this.nModels = 0; this.jobs = 0; this.nJobs = 0;
    this.running = 0; this.nRunning = 0; this.workers = 0; this.nWorkers = 0;
    this.entries = 0; this.nEntries = 0; this.ghosts = 0; this.nGhosts = 0;
    this.wanted = 0; this.nWanted = 0; this.pool = 0; this.nPool = 0; this.lead = 0;
    this.nodes = 0; this.nNodes = 0; this.demand = 0; this.nDemand = 0;
    this.base = inBuf;
    this.len = len;
    this.valid = len >= HEADER_SIZE && load<u16>(inBuf) == 1 && load<u32>(inBuf, 4) == kind;
    const p = this.valid ? load<u32>(inBuf, 48) : 0;
    this.body = inBuf + HEADER_SIZE + 8 * <usize>p;
    const b = this.body;
    if (!this.valid) {
      // nothing to read
    } else if (kind == KIND_EVICTION) {
      this.nEntries = load<u32>(b, 16); this.nGhosts = load<u32>(b, 20); this.nWanted = load<u32>(b, 24);
      this.entries = b + 32;
      this.ghosts = this.entries + <usize>this.nEntries * ENTRY_SIZE;
      this.wanted = this.ghosts + <usize>this.nGhosts * GHOST_SIZE;
      // The demand section (1.3): n_demand f64s after the wanted records,
      // 0 or one per entry; an older host sends none (the word was 0).
      this.nDemand = load<u32>(b, 28);
      this.demand = this.wanted + <usize>this.nWanted * WANTED_SIZE;
      this.valid = (this.nDemand == 0 || this.nDemand == this.nEntries) &&
        this.demand + 8 * <usize>this.nDemand <= inBuf + len;
    } else if (kind == KIND_SCHEDULING) {
      this.nJobs = load<u32>(b); this.nRunning = load<u32>(b, 4); this.nWorkers = load<u32>(b, 8);
      this.nModels = load<u32>(b, 12); this.nPool = load<u32>(b, 16);
      this.models = b + 24;
      this.jobs = this.models + <usize>this.nModels * MODEL_SIZE;
      this.running = this.jobs + <usize>this.nJobs * JOB_SIZE;
      this.workers = this.running + <usize>this.nRunning * JOB_SIZE;
      this.pool = this.workers + <usize>this.nWorkers * WORKER_SIZE;
      this.valid = this.pool + <usize>this.nPool * 4 <= inBuf + len;
    } else if (kind == KIND_BATCHING) {
      this.lead = load<u32>(b); this.nJobs = load<u32>(b, 4); this.nWorkers = load<u32>(b, 8);
      this.nModels = load<u32>(b, 12); this.nPool = load<u32>(b, 16);
      this.models = b + 24;
      this.jobs = this.models + <usize>this.nModels * MODEL_SIZE;
      this.workers = this.jobs + <usize>this.nJobs * JOB_SIZE;
      this.pool = this.workers + <usize>this.nWorkers * WORKER_SIZE;
      this.valid = this.pool + <usize>this.nPool * 4 <= inBuf + len && this.lead < this.nJobs;
    } else if (kind == KIND_BALANCING) {
      this.nWorkers = load<u32>(b); this.nModels = load<u32>(b, 4); this.nPool = load<u32>(b, 8);
      this.models = b + 16;
      this.jobs = this.models + <usize>this.nModels * MODEL_SIZE;
      this.nJobs = 1;
      this.workers = this.jobs + JOB_SIZE;
      this.pool = this.workers + <usize>this.nWorkers * WORKER_SIZE;
      this.valid = this.pool + <usize>this.nPool * 4 <= inBuf + len;
    } else if (kind == KIND_ROUTING) {
      this.nNodes = load<u32>(b); this.nModels = load<u32>(b, 4); this.nPool = load<u32>(b, 8);
      this.models = b + 24;
      this.jobs = this.models + <usize>this.nModels * MODEL_SIZE;
      this.nJobs = 1;
      this.nodes = this.jobs + JOB_SIZE;
      this.pool = this.nodes + <usize>this.nNodes * NODE_SIZE;
      this.valid = this.pool + <usize>this.nPool * 4 <= inBuf + len;
    }
  }

  get nowNs(): i64 { return load<i64>(this.base, 8); }
  state(i: i32): u64 { return load<u64>(this.base + 16 + 8 * <usize>i); }
  get paramCount(): u32 { return load<u32>(this.base, 48); }
  // param returns parameter i's value, or def when the host sent fewer.
  param(i: u32, def: f64): f64 { return i < this.paramCount ? load<f64>(this.base + HEADER_SIZE + 8 * <usize>i) : def; }

  model(i: u32): Model { return changetype<Model>(this.models + <usize>i * MODEL_SIZE); }
  job(i: u32): Job { return changetype<Job>(this.jobs + <usize>i * JOB_SIZE); }
  runningJob(i: u32): Job { return changetype<Job>(this.running + <usize>i * JOB_SIZE); }
  worker(i: u32): Worker { return changetype<Worker>(this.workers + <usize>i * WORKER_SIZE); }
  node(i: u32): Node { return changetype<Node>(this.nodes + <usize>i * NODE_SIZE); }
  entry(i: u32): Entry { return changetype<Entry>(this.entries + <usize>i * ENTRY_SIZE); }
  ghost(i: u32): Ghost { return changetype<Ghost>(this.ghosts + <usize>i * GHOST_SIZE); }
  wantedModel(i: u32): Wanted { return changetype<Wanted>(this.wanted + <usize>i * WANTED_SIZE); }
  // entryDemand is entry i's recent demand (ABI 1.3: the kernel's decayed
  // count of recent jobs asking for its model, half-life 30 minutes), 0
  // when the host sent none.
  entryDemand(i: u32): f64 { return i < this.nDemand ? load<f64>(this.demand + 8 * <usize>i) : 0; }
  // need is the bytes an eviction call must make room for, net of the
  // free space the cache already has (0: a prefetch-only call).
  get need(): u64 { return load<u64>(this.body); }
  // free is the bytes free now (a prefetch call's room).
  get free(): u64 { return load<u64>(this.body, 8); }
  // random is the routing input's random word: a policy that chooses at
  // random must use it (the module has no other randomness; ABI 4.7).
  get random(): u64 { return load<u64>(this.body, 16); }
  // poolAt returns element i of the pool (a model id); callers index it with
  // a record's offset + k for k < its count. Out of range reads give 0xFFFFFFFF.
  poolAt(i: u32): u32 { return i < this.nPool ? load<u32>(this.pool + 4 * <usize>i) : 0xFFFFFFFF; }
  // resident reports whether worker w holds model m.
  resident(w: Worker, m: u32): bool {
    const off = w.residentOffset, n = w.residentCount;
    for (let k: u32 = 0; k < n; k++) if (this.poolAt(off + k) == m) return true;
    return false;
  }
}

let shared: Input | null = null;

let outBuf: usize = 0;
let outCap: i32 = 0;
let outLen: i32 = 0;

// begin starts an answer with room for extra body bytes.
export function begin(status: u32, kind: u32, inp: Input, extra: i32): usize {
  const need = 40 + extra;
  if (need > outCap) {
    outBuf = heap.alloc(<usize>need);
    outCap = need;
  }
  store<u32>(outBuf, status);
  store<u32>(outBuf, kind, 4);
  for (let i = 0; i < 4; i++) store<u64>(outBuf + 8 + 8 * <usize>i, inp.valid ? inp.state(i) : 0);
  outLen = need;
  return outBuf;
}

// setState sets state word i of the answer begun last.
export function setState(i: i32, v: u64): void { store<u64>(outBuf + 8 + 8 * <usize>i, v); }

// finish returns the hook's result for the answer begun last.
export function finish(): u64 { return (<u64>outBuf << 32) | <u64>outLen; }

// answerStatus answers a status with an empty body for kind.
export function answerStatus(status: u32, kind: u32, inp: Input): u64 {
  let body = 0;
  if (kind == KIND_EVICTION) body = 16;
  else if (kind == KIND_SCHEDULING) body = 8;
  else if (kind == KIND_BATCHING) body = 16;
  else if (kind == KIND_BALANCING) body = 8;
  else if (kind == KIND_ROUTING) body = 8;
  const p = begin(status, kind, inp, body);
  memory.fill(p + 40, 0, body);
  if (kind == KIND_BALANCING) store<u32>(p, NO_WORKER, 40);
  if (kind == KIND_ROUTING) store<u32>(p, NO_NODE, 40);
  return finish();
}

// answerRouting answers a routing decision: a node index, or NO_NODE
// (NO_DECISION, a stall while a healthy node can hold the job).
export function answerRouting(inp: Input, node: u32): u64 {
  const p = begin(node == NO_NODE ? STATUS_NO_DECISION : STATUS_OK, KIND_ROUTING, inp, 8);
  store<u32>(p, node, 40);
  store<u32>(p, 0, 44);
  return finish();
}

// answerBalancing answers a balancing decision.
export function answerBalancing(inp: Input, worker: u32): u64 {
  const p = begin(worker == NO_WORKER ? STATUS_NO_DECISION : STATUS_OK, KIND_BALANCING, inp, 8);
  store<u32>(p, worker, 40);
  store<u32>(p, 0, 44);
  return finish();
}

// answerEviction answers an eviction decision: victims[0:nv] (entry
// indices, in eviction order), prefetch[0:np] (wanted indices) and nt tag
// updates, tagEntries[i] getting tagValues[i].
export function answerEviction(inp: Input, victims: StaticArray<u32>, nv: i32, prefetch: StaticArray<u32>, np: i32,
    tagEntries: StaticArray<u32>, tagValues: StaticArray<u64>, nt: i32): u64 {
  const p = begin(STATUS_OK, KIND_EVICTION, inp, 16 + 4 * nv + 4 * np + 16 * nt) + 40;
  store<u32>(p, nv); store<u32>(p, np, 4); store<u32>(p, nt, 8); store<u32>(p, 0, 12);
  let q = p + 16;
  for (let i = 0; i < nv; i++, q += 4) store<u32>(q, unchecked(victims[i]));
  for (let i = 0; i < np; i++, q += 4) store<u32>(q, unchecked(prefetch[i]));
  for (let i = 0; i < nt; i++, q += 16) {
    store<u32>(q, unchecked(tagEntries[i])); store<u32>(q, 0, 4); store<u64>(q, unchecked(tagValues[i]), 8);
  }
  return finish();
}

// answerScheduling answers a scheduling decision: queued jobs to dispatch,
// dispatch[0:nd], best first, and running jobs to preempt, preempt[0:np].
export function answerScheduling(inp: Input, dispatch: StaticArray<u32>, nd: i32, preempt: StaticArray<u32>, np: i32): u64 {
  const p = begin(STATUS_OK, KIND_SCHEDULING, inp, 8 + 4 * nd + 4 * np) + 40;
  store<u32>(p, nd); store<u32>(p, np, 4);
  let q = p + 8;
  for (let i = 0; i < nd; i++, q += 4) store<u32>(q, unchecked(dispatch[i]));
  for (let i = 0; i < np; i++, q += 4) store<u32>(q, unchecked(preempt[i]));
  return finish();
}

// answerBatching answers a batching decision: batch[0:n], the lead first,
// and waitNs > 0 to hold the lead back for more company.
export function answerBatching(inp: Input, batch: StaticArray<u32>, n: i32, waitNs: i64 = 0): u64 {
  const p = begin(STATUS_OK, KIND_BATCHING, inp, 16 + 4 * n) + 40;
  store<i64>(p, waitNs); store<u32>(p, n, 8); store<u32>(p, 0, 12);
  for (let i = 0; i < n; i++) store<u32>(p + 16 + 4 * <usize>i, unchecked(batch[i]));
  return finish();
}

// answerList answers a scheduling (dispatch order, no preemption),
// batching (batch, lead first) or eviction (victims only) decision from
// ids[0:n]. Kept for modules written against the first SDK; the answer*
// functions above write every field.
export function answerList(kind: u32, inp: Input, ids: StaticArray<u32>, n: i32, waitNs: i64 = 0): u64 {
  if (kind == KIND_SCHEDULING) return answerScheduling(inp, ids, n, noIDs, 0);
  if (kind == KIND_BATCHING) return answerBatching(inp, ids, n, waitNs);
  return answerEviction(inp, ids, n, noIDs, 0, noIDs, noTags, 0);
}

// Empty lists, made once: with the stub runtime nothing is ever freed, so
// an allocation per call would grow memory until the host's cap.
const noIDs = new StaticArray<u32>(0);
const noTags = new StaticArray<u64>(0);
