// Loads rowforge's services from proto/ with @grpc/proto-loader and wraps the few helpers a
// Node.js program needs: promisified unary calls, async iteration of server streams, call
// metadata (token and project) and google.protobuf.Struct/Value conversion.
'use strict';

const path = require('node:path');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const PROTO_DIR = path.join(PROTO_ROOT, 'rowforge', 'v1');

function loadServices() {
  const files = fs.readdirSync(PROTO_DIR)
    .filter((name) => name.endsWith('.proto'))
    .map((name) => path.join('rowforge', 'v1', name));
  const definition = protoLoader.loadSync(files, {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto files (table_id, not tableId)
    longs: Number, // int64 counters fit in a double here
    enums: String, // 'TABLE_TYPE_ACTION'
    defaults: true,
    oneofs: true, // a oneof's set member is named in a virtual field (e.g. event)
  });
  return grpc.loadPackageDefinition(definition).rowforge.v1;
}

// A Struct from a plain object, and back (Struct fields are typed Values on the wire).
function toValue(v) {
  if (v === null || v === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v) };
}

function toStruct(obj) {
  const fields = {};
  for (const [k, v] of Object.entries(obj || {})) fields[k] = toValue(v);
  return { fields };
}

function fromValue(v) {
  if (!v) return null;
  switch (v.kind) {
    case 'stringValue': return v.stringValue;
    case 'numberValue': return v.numberValue;
    case 'boolValue': return v.boolValue;
    case 'structValue': return fromStruct(v.structValue);
    case 'listValue': return (v.listValue.values || []).map(fromValue);
    default: return null;
  }
}

function fromStruct(s) {
  const out = {};
  for (const [k, v] of Object.entries((s && s.fields) || {})) out[k] = fromValue(v);
  return out;
}

class RowforgeClient {
  constructor({ address, token, projectId, timeoutMs = 60000 } = {}) {
    this.v1 = loadServices();
    const target = address || process.env.ROWFORGE_ADDRESS || '127.0.0.1:50051';
    const creds = grpc.credentials.createInsecure();
    this.tables = new this.v1.TableService(target, creds);
    this.batch = new this.v1.BatchJobService(target, creds);
    this.models = new this.v1.ModelService(target, creds);
    this.metadata = new grpc.Metadata();
    const bearer = token || process.env.ROWFORGE_TOKEN;
    const project = projectId || process.env.ROWFORGE_PROJECT_ID;
    if (bearer) this.metadata.set('authorization', `Bearer ${bearer}`);
    if (project) this.metadata.set('x-project-id', project);
    this.timeoutMs = timeoutMs;
  }

  deadline() {
    return new Date(Date.now() + this.timeoutMs);
  }

  // Unary call as a promise; errors carry .code and .details from the gRPC status.
  unary(service, method, request) {
    return new Promise((resolve, reject) => {
      service[method](request, this.metadata, { deadline: this.deadline() }, (err, res) => {
        if (err) reject(err); else resolve(res);
      });
    });
  }

  // A server stream as an async iterator of messages.
  stream(service, method, request, { deadline = true } = {}) {
    const options = deadline ? { deadline: this.deadline() } : {};
    return service[method](request, this.metadata, options);
  }

  close() {
    for (const client of [this.tables, this.batch, this.models]) client.close();
  }
}

module.exports = { RowforgeClient, toStruct, fromStruct, fromValue, loadServices };
