/**
 * A minimal ONNX protobuf writer: just enough of ModelProto / GraphProto / NodeProto /
 * TensorProto / ValueInfoProto to describe the small float32 GEMM graphs the native backend
 * runs through onnxruntime. Field numbers follow onnx/onnx.proto (proto2 wire format).
 */

/** ONNX TensorProto.DataType values we use. */
export const DataType = { FLOAT: 1, INT32: 6, INT64: 7 } as const;

/** A dimension: a fixed size, or a symbolic name (dynamic at run time). */
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  elemType: number;
  /** Omit for an unknown rank. */
  shape?: Dim[];
}

export type AttrValue = { kind: 'int'; value: number } | { kind: 'float'; value: number } | { kind: 'string'; value: string } | { kind: 'ints'; value: number[] };

export interface NodeDef {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attributes?: Record<string, AttrValue>;
}

export interface TensorDef {
  name: string;
  dims: number[];
  dataType: number;
  /** Little-endian element bytes (TensorProto.raw_data). */
  raw: Uint8Array;
}

export interface GraphDef {
  name: string;
  nodes: NodeDef[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers?: TensorDef[];
}

export interface ModelDef {
  graph: GraphDef;
  /** Default 8 (ONNX 1.10+). */
  irVersion?: number;
  /** Operator set imports, e.g. [{ domain: '', version: 17 }]. */
  opsets: { domain: string; version: number }[];
  producerName?: string;
}

const WIRE_VARINT = 0;
const WIRE_I32 = 5;
const WIRE_LEN = 2;

/** Appends protobuf fields to a growable byte buffer. */
class ProtoWriter {
  private buf = new Uint8Array(256);
  private len = 0;
  private static enc = new TextEncoder();

  private ensure(extra: number): void {
    if (this.len + extra <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + extra) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(this.buf.subarray(0, this.len));
    this.buf = nb;
  }

  private rawVarint(v: number | bigint): void {
    // int64 fields carry negative values as 10-byte two's complement
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.len++] = Number(x);
  }

  private tag(field: number, wire: number): void {
    this.rawVarint((field << 3) | wire);
  }

  varint(field: number, v: number): void {
    if (!Number.isSafeInteger(v)) throw new Error(`onnx encoder: field ${field} needs an integer, got ${v}`);
    this.tag(field, WIRE_VARINT);
    this.rawVarint(v);
  }

  float(field: number, v: number): void {
    this.tag(field, WIRE_I32);
    this.ensure(4);
    new DataView(this.buf.buffer).setFloat32(this.len, v, true);
    this.len += 4;
  }

  bytes(field: number, b: Uint8Array): void {
    this.tag(field, WIRE_LEN);
    this.rawVarint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, ProtoWriter.enc.encode(s));
  }

  message(field: number, write: (w: ProtoWriter) => void): void {
    const w = new ProtoWriter();
    write(w);
    this.bytes(field, w.finish());
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

function checkName(what: string, name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new Error(`onnx encoder: ${what} needs a non-empty name`);
}

function checkDim(what: string, d: number): void {
  if (!Number.isSafeInteger(d) || d < 0) {
    throw new Error(`onnx encoder: ${what} has invalid dimension ${d} (must be a non-negative integer)`);
  }
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  checkName('value info', v.name);
  w.string(1, v.name);
  w.message(2, (type) => {
    // TypeProto.tensor_type
    type.message(1, (tt) => {
      tt.varint(1, v.elemType);
      if (v.shape) {
        const shape = v.shape;
        tt.message(2, (sh) => {
          shape.forEach((d, i) => {
            sh.message(1, (dim) => {
              if (typeof d === 'string') {
                if (d.length === 0) throw new Error(`onnx encoder: ${v.name} dim ${i} has an empty symbolic name`);
                dim.string(2, d);
              } else {
                checkDim(`${v.name} dim ${i}`, d);
                dim.varint(1, d);
              }
            });
          });
        });
      }
    });
  });
}

function writeTensor(w: ProtoWriter, t: TensorDef): void {
  checkName('initializer', t.name);
  let count = 1;
  t.dims.forEach((d, i) => {
    checkDim(`initializer ${t.name} dim ${i}`, d);
    count *= d;
  });
  const elemBytes = t.dataType === DataType.INT64 ? 8 : 4;
  if (t.raw.length !== count * elemBytes) {
    throw new Error(`onnx encoder: initializer ${t.name} has ${t.raw.length} bytes, dims [${t.dims.join(', ')}] need ${count * elemBytes}`);
  }
  for (const d of t.dims) w.varint(1, d);
  w.varint(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, t.raw);
}

// AttributeProto.AttributeType
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_STRING = 3;
const ATTR_INTS = 7;

function writeNode(w: ProtoWriter, n: NodeDef): void {
  if (!n.opType) throw new Error('onnx encoder: node needs an opType');
  for (const i of n.inputs) w.string(1, i); // '' marks an omitted optional input
  for (const o of n.outputs) {
    checkName(`${n.opType} output`, o);
    w.string(2, o);
  }
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const [name, a] of Object.entries(n.attributes ?? {})) {
    w.message(5, (at) => {
      at.string(1, name);
      switch (a.kind) {
        case 'float':
          at.float(2, a.value);
          at.varint(20, ATTR_FLOAT);
          break;
        case 'int':
          at.varint(3, a.value);
          at.varint(20, ATTR_INT);
          break;
        case 'string':
          at.string(4, a.value);
          at.varint(20, ATTR_STRING);
          break;
        case 'ints':
          for (const v of a.value) at.varint(8, v);
          at.varint(20, ATTR_INTS);
          break;
      }
    });
  }
  if (n.domain) w.string(7, n.domain);
}

/** Serialises a model to ONNX protobuf bytes. */
export function encodeModel(m: ModelDef): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, m.irVersion ?? 8);
  w.string(2, m.producerName ?? 'moe-ts');
  w.message(7, (g) => {
    const graph = m.graph;
    for (const n of graph.nodes) g.message(1, (nw) => writeNode(nw, n));
    g.string(2, graph.name);
    for (const t of graph.initializers ?? []) g.message(5, (tw) => writeTensor(tw, t));
    for (const v of graph.inputs) g.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of graph.outputs) g.message(12, (vw) => writeValueInfo(vw, v));
  });
  for (const o of m.opsets) {
    w.message(8, (ow) => {
      if (o.domain) ow.string(1, o.domain);
      ow.varint(2, o.version);
    });
  }
  return w.finish();
}

export const attrInt = (value: number): AttrValue => ({ kind: 'int', value });
export const attrFloat = (value: number): AttrValue => ({ kind: 'float', value });
export const attrInts = (value: number[]): AttrValue => ({ kind: 'ints', value });
