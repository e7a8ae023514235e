// The rowforge client for Node.js: one HTTP/2 connection (plaintext or TLS) shared by typed
// clients of every service, with the token and project sent on each call.
import { readFileSync } from "node:fs";

import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BatchJobService } from "./gen/rowforge/v1/batch_job_service_pb.js";
import { FileService } from "./gen/rowforge/v1/file_service_pb.js";
import { KnowledgeService } from "./gen/rowforge/v1/knowledge_service_pb.js";
import { ModelService } from "./gen/rowforge/v1/model_service_pb.js";
import { TableService } from "./gen/rowforge/v1/table_service_pb.js";

/** TLS settings; `true` uses the system's roots. */
export interface TLSOptions {
  /** PEM roots to trust (contents or a file path), e.g. a private CA. */
  rootCerts?: string | Buffer;
  /** Name the server's certificate must carry, when it differs from the address's host. */
  serverName?: string;
  /** PEM client certificate and key, for mutual TLS. */
  certChain?: string | Buffer;
  privateKey?: string | Buffer;
}

export interface RowForgeOptions {
  /** host:port, or https://host:port for TLS (default ROWFORGE_ADDRESS, 127.0.0.1:50051). */
  address?: string;
  /** Bearer token (default ROWFORGE_TOKEN). */
  token?: string;
  /** Project id sent as x-project-id (default ROWFORGE_PROJECT_ID). */
  projectId?: string;
  /** TLS: true, or its settings (default: on for https:// addresses or ROWFORGE_TLS=1;
   * ROWFORGE_ROOT_CERTS names a PEM file of roots to trust; ROWFORGE_CLIENT_CERT and
   * ROWFORGE_CLIENT_KEY a client certificate and key for mutual TLS). */
  tls?: boolean | TLSOptions;
  /** Default deadline of a call in milliseconds (default 300 000); per call: { timeoutMs }. */
  timeoutMs?: number;
}

function pem(value: string | Buffer | undefined): Buffer | undefined {
  if (value === undefined || Buffer.isBuffer(value)) return value;
  return value.includes("-----BEGIN") ? Buffer.from(value) : readFileSync(value);
}

export class RowForge {
  readonly tables: Client<typeof TableService>;
  readonly knowledge: Client<typeof KnowledgeService>;
  readonly files: Client<typeof FileService>;
  readonly batch: Client<typeof BatchJobService>;
  readonly models: Client<typeof ModelService>;

  constructor(options: RowForgeOptions = {}) {
    const env = process.env;
    let address = options.address ?? env.ROWFORGE_ADDRESS ?? "127.0.0.1:50051";
    let tls = options.tls ?? (env.ROWFORGE_TLS === "1" || env.ROWFORGE_TLS === "true");
    if (address.startsWith("https://")) {
      address = address.slice("https://".length);
      tls = tls || true;
    } else if (address.startsWith("http://")) {
      address = address.slice("http://".length);
    }
    if (env.ROWFORGE_CLIENT_CERT && env.ROWFORGE_CLIENT_KEY) tls = tls || true;
    const settings: TLSOptions = typeof tls === "object" ? tls
      : {
        rootCerts: env.ROWFORGE_ROOT_CERTS || undefined,
        certChain: env.ROWFORGE_CLIENT_CERT || undefined,
        privateKey: env.ROWFORGE_CLIENT_KEY || undefined,
      };
    const token = options.token ?? env.ROWFORGE_TOKEN;
    const projectId = options.projectId ?? env.ROWFORGE_PROJECT_ID;
    const auth: Interceptor = (next) => (request) => {
      if (token) request.header.set("authorization", `Bearer ${token}`);
      if (projectId) request.header.set("x-project-id", projectId);
      return next(request);
    };
    const transport = createGrpcTransport({
      baseUrl: `${tls ? "https" : "http"}://${address}`,
      interceptors: [auth],
      defaultTimeoutMs: options.timeoutMs ?? 300_000,
      nodeOptions: tls ? {
        ca: pem(settings.rootCerts),
        servername: settings.serverName,
        cert: pem(settings.certChain),
        key: pem(settings.privateKey),
      } : {},
    });
    this.tables = createClient(TableService, transport);
    this.knowledge = createClient(KnowledgeService, transport);
    this.files = createClient(FileService, transport);
    this.batch = createClient(BatchJobService, transport);
    this.models = createClient(ModelService, transport);
  }
}
