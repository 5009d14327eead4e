// resident-first: a kiln balancing policy written in AssemblyScript.
//
// It places a job on the idle worker that can hold it and already has the
// most of its model bytes resident; ties go to the device with fewer busy
// workers, then to more free VRAM. Parameter 0, "min_free_gib", skips
// workers with less free VRAM than that (default 0).
export { kiln_abi_v1_2, kiln_buffer } from "../../../sdk/assemblyscript/assembly/kiln";
import {
  Input, KIND_BALANCING, NO_WORKER, STATUS_ERROR, answerBalancing, answerStatus,
} from "../../../sdk/assemblyscript/assembly/kiln";

// kiln_params declares the tunable parameter.
let params: usize = 0;
export function kiln_params(): u64 {
  if (params == 0) {
    params = heap.alloc(8 + 64);
    store<u32>(params, 1);
    store<u32>(params, 0, 4);
    memory.fill(params + 8, 0, 64);
    const name = "min_free_gib";
    for (let i = 0; i < name.length; i++) store<u8>(params + 8 + <usize>i, <u8>name.charCodeAt(i));
    store<u32>(params + 8, 0, 32); // float
    store<f64>(params + 8, 0, 40); // default
    store<f64>(params + 8, 0, 48); // min
    store<f64>(params + 8, 1024, 56); // max
  }
  return (<u64>params << 32) | 72;
}

export function kiln_balance(len: i32): u64 {
  const inp = Input.read(len, KIND_BALANCING);
  if (!inp.valid) return answerStatus(STATUS_ERROR, KIND_BALANCING, inp);
  const job = inp.job(0);
  const minFree = <u64>(inp.param(0, 0) * 1073741824.0);
  // The job's fields and the best worker's are kept in locals: each read of
  // the snapshot is a bounds-checked load in the host's compiled code.
  const vram = job.vram, off = job.modelsOffset, nm = job.modelCount;
  let best: u32 = NO_WORKER;
  let bestRes: u64 = 0, bestBusy: u32 = 0, bestFree: u64 = 0;
  for (let i: u32 = 0; i < inp.nWorkers; i++) {
    const w = inp.worker(i);
    if (!w.idle) continue;
    const usable = w.usableVRAM, free = w.freeVRAM;
    if ((usable != 0 && vram > usable) || free < minFree) continue;
    let res: u64 = 0;
    for (let k: u32 = 0; k < nm; k++) {
      const m = inp.poolAt(off + k);
      if (m < inp.nModels && inp.resident(w, m)) res += inp.model(m).bytes;
    }
    const busy = w.deviceBusy;
    if (best == NO_WORKER || res > bestRes || (res == bestRes && (busy < bestBusy ||
        (busy == bestBusy && free > bestFree)))) {
      best = i; bestRes = res; bestBusy = busy; bestFree = free;
    }
  }
  return answerBalancing(inp, best);
}
