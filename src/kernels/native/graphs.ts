/**
 * The small ONNX graphs the native backend runs. Every dimension is symbolic so one session
 * per variant serves all sizes; ORT re-plans shapes per run, which is cheap for 1-node graphs.
 */
import { attrFloat, attrInt, DataType, encodeModel, type Dim, type NodeDef, type ValueInfo } from './onnx.js';

const F = DataType.FLOAT;
const OPSETS = [
  { domain: '', version: 17 },
  // FusedMatMul lives in the Microsoft contrib domain and takes transposes as attributes, so
  // batched products with op(A)/op(B) need no Transpose copies.
  { domain: 'com.microsoft', version: 1 },
];

const v = (name: string, shape: Dim[]): ValueInfo => ({ name, elemType: F, shape });

/**
 * 2D product Y = op(A) op(B) [+ C]. With `accumulate` the caller feeds its output array as C and
 * fetches Y into the same memory: ORT's Gemm copies C into Y (a no-op copy here) and then runs
 * the GEMM with beta = 1, so accumulation costs no extra pass.
 */
export function gemmModel(transA: boolean, transB: boolean, accumulate: boolean): Uint8Array {
  const inputs = [v('A', transA ? ['K', 'M'] : ['M', 'K']), v('B', transB ? ['N', 'K'] : ['K', 'N'])];
  if (accumulate) inputs.push(v('C', ['M', 'N']));
  return encodeModel({
    opsets: OPSETS,
    graph: {
      name: `gemm_${+transA}${+transB}${+accumulate}`,
      nodes: [
        {
          opType: 'Gemm',
          inputs: accumulate ? ['A', 'B', 'C'] : ['A', 'B'],
          outputs: ['Y'],
          attributes: { transA: attrInt(+transA), transB: attrInt(+transB), alpha: attrFloat(1), beta: attrFloat(1) },
        },
      ],
      inputs,
      outputs: [v('Y', ['M', 'N'])],
    },
  });
}

/** Batched Y[b] = op(A[b]) op(B[b] or B) [+ C[b]], B 2D when broadcast. */
export function batchedModel(transA: boolean, transB: boolean, broadcastB: boolean, accumulate: boolean): Uint8Array {
  const bShape: Dim[] = transB ? ['N', 'K'] : ['K', 'N'];
  const inputs = [v('A', transA ? ['Bt', 'K', 'M'] : ['Bt', 'M', 'K']), v('B', broadcastB ? bShape : ['Bt', ...bShape])];
  const nodes: NodeDef[] = [
    {
      opType: 'FusedMatMul',
      domain: 'com.microsoft',
      inputs: ['A', 'B'],
      outputs: [accumulate ? 'T' : 'Y'],
      attributes: { transA: attrInt(+transA), transB: attrInt(+transB), alpha: attrFloat(1) },
    },
  ];
  if (accumulate) {
    // Y aliases C (the caller's array); Add reads each element before writing it.
    inputs.push(v('C', ['Bt', 'M', 'N']));
    nodes.push({ opType: 'Add', inputs: ['T', 'C'], outputs: ['Y'] });
  }
  return encodeModel({
    opsets: OPSETS,
    graph: {
      name: `batched_${+transA}${+transB}${+broadcastB}${+accumulate}`,
      nodes,
      inputs,
      outputs: [v('Y', ['Bt', 'M', 'N'])],
    },
  });
}

/**
 * E independent 2D Gemms in one graph: inputs A{e}, B{e}, outputs Y{e}. The caller feeds views
 * into its contiguous arrays and fetches into views of the result, so nothing is split, padded
 * or concatenated, and one run call covers all groups.
 *  - 'nn': Y_e[s_e x n] = A_e[s_e x k] W_e[k x n]
 *  - 'nt': Y_e = A_e W_e^T, W_e stored [n x k]
 *  - 'tn': Y_e[k x n] = A_e^T G_e[s_e x n]   (the weight gradient)
 * With `accumulate` ('nn'/'nt'), each Gemm also takes C{e} (beta = 1), fed as the memory Y{e}
 * is fetched into, so the product adds into the caller's array (see gemmModel).
 */
export function groupedModel(groups: number, kind: 'nn' | 'nt' | 'tn', accumulate = false): Uint8Array {
  if (accumulate && kind === 'tn') throw new Error("groupedModel: accumulate is not supported for 'tn'");
  if (!Number.isSafeInteger(groups) || groups < 1) throw new Error(`groupedModel: invalid group count ${groups}`);
  const nodes: NodeDef[] = [];
  const inputs: ValueInfo[] = [];
  const outputs: ValueInfo[] = [];
  for (let e = 0; e < groups; e++) {
    const s = `S${e}`;
    if (kind === 'tn') {
      inputs.push(v(`A${e}`, [s, 'K']), v(`B${e}`, [s, 'N']));
      outputs.push(v(`Y${e}`, ['K', 'N']));
    } else {
      inputs.push(v(`A${e}`, [s, 'K']), v(`B${e}`, kind === 'nt' ? ['N', 'K'] : ['K', 'N']));
      if (accumulate) inputs.push(v(`C${e}`, [s, 'N']));
      outputs.push(v(`Y${e}`, [s, 'N']));
    }
    nodes.push({
      opType: 'Gemm',
      name: `g${e}`,
      inputs: accumulate ? [`A${e}`, `B${e}`, `C${e}`] : [`A${e}`, `B${e}`],
      outputs: [`Y${e}`],
      attributes: {
        transA: attrInt(kind === 'tn' ? 1 : 0),
        transB: attrInt(kind === 'nt' ? 1 : 0),
        ...(accumulate ? { alpha: attrFloat(1), beta: attrFloat(1) } : {}),
      },
    });
  }
  return encodeModel({ opsets: OPSETS, graph: { name: `grouped_${kind}${accumulate ? '_acc' : ''}_${groups}`, nodes, inputs, outputs } });
}
