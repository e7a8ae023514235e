// rowforge from TypeScript: creates an action table with an int column, streams rows into it
// (StreamAddRows), reads them back, uploads a file, runs a small batch job and reads its
// results (StreamResults). Prints one JSON document (bigints as strings).
//
//   npm run build --prefix clients/node
//   ROWFORGE_ADDRESS=127.0.0.1:50051 node clients/node/dist/example.js
//
// With `tls-check` as the argument it only lists the models (for the TLS test).
import { toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";

import { type StreamAddRowsResponse } from "./gen/rowforge/v1/table_service_pb.js";
import {
  Code,
  ConnectError,
  fromCells,
  JobState,
  RequestState,
  RowForge,
  streamEvents,
  TableType,
  toRowValues,
} from "./index.js";

const BIG = 9007199254740993n; // 2^53 + 1: a number could not hold it

async function streamRows(client: RowForge, tableId: string) {
  const events: string[] = [];
  const text: Record<string, string> = {};
  const stream = client.tables.streamAddRows({
    tableType: TableType.ACTION,
    tableId,
    legacyValues: false,
    coalesceEvents: true, // events ready at once share a message; streamEvents opens them
    rows: [
      toRowValues({ topic: "gRPC", n: BIG }),
      toRowValues({ topic: "Node.js", n: 42 }),
    ],
  });
  for await (const message of streamEvents(stream as AsyncIterable<StreamAddRowsResponse>)) {
    const event = message.event;
    if (event.case === undefined) continue;
    events.push(event.case);
    if (event.case === "delta") {
      const key = `${event.value.rowId}/${event.value.outputColumnName}`;
      text[key] = (text[key] ?? "") + event.value.text;
    } else if (event.case === "cellCompleted") {
      const key = `${event.value.rowId}/${event.value.outputColumnName}`;
      if (!(key in text)) text[key] = event.value.cell?.text ?? ""; // streamed no delta
    }
  }
  return { events, text };
}

async function uploadFile(client: RowForge) {
  const content = Buffer.from("hello from TypeScript\n");
  async function* parts() {
    yield { part: { case: "metadata" as const, value: { name: "hello.txt", contentType: "text/plain" } } };
    yield { part: { case: "chunk" as const, value: content } };
  }
  const { file } = await client.files.uploadFile(parts());
  const chunks: Buffer[] = [];
  for await (const message of client.files.downloadFile({ uri: file?.uri ?? "" })) {
    if (message.part.case === "chunk") chunks.push(Buffer.from(message.part.value));
  }
  return { uri: file?.uri, size: Number(file?.size ?? 0n),
           roundTrip: Buffer.concat(chunks).equals(content) };
}

async function runBatch(client: RowForge) {
  const { job } = await client.batch.createJob({
    systemInstruction: "Be brief.", jobType: "ts-example",
  });
  const jobId = job?.jobId ?? "";
  await client.batch.addRequests({
    jobId,
    requests: [
      { requestId: "n1", contentParts: [{ part: { case: "text", value: "Say hello from TypeScript" } }] },
      {
        requestId: "n2",
        contentParts: [{ part: { case: "text", value: "Name a colour" } }],
        outputSchema: {
          type: "object", properties: { colour: { type: "string" } }, required: ["colour"],
        },
        metadata: { source: "node" },
      },
    ],
  });
  await client.batch.submitJob({ jobId });
  const results = [];
  let state: JobState = JobState.UNSPECIFIED;
  // follow (the default) keeps the stream open until the job ends: no deadline on it.
  for await (const message of client.batch.streamResults({ jobId, cursor: 0n },
                                                         { timeoutMs: 0 })) {
    if (message.event.case === "result") {
      const r = message.event.value;
      results.push({
        sequence: Number(r.sequence), requestId: r.requestId,
        state: RequestState[r.state], responseText: r.responseText,
        responseJson: r.responseJson ? toJson(ValueSchema, r.responseJson) : null,
        metadata: r.metadata ?? null,
      });
    } else if (message.event.case === "job") {
      state = message.event.value.state;
    }
  }
  return { jobId, state: JobState[state], results };
}

async function main() {
  const client = new RowForge();
  if (process.argv[2] === "tls-check") {
    const { items } = await client.models.listModels({});
    console.log(JSON.stringify({ models: items.map((m) => m.id) }));
    return;
  }
  const tableId = `ts_example_${Date.now()}`;
  const { table } = await client.tables.createTable({
    tableType: TableType.ACTION,
    tableId,
    cols: [
      { id: "topic", dtype: "str" },
      { id: "n", dtype: "int" },
      {
        id: "summary", dtype: "str",
        genConfig: { config: { case: "llm", value: {
          prompt: "One sentence about ${topic}.", maxTokens: 40 } } },
      },
    ],
  });
  const stream = await streamRows(client, tableId);
  const listed = await client.tables.listRows({
    tableType: TableType.ACTION, tableId, limit: 10, legacyValues: false,
  });
  const file = await uploadFile(client);
  const batch = await runBatch(client);
  await client.tables.deleteTable({ tableType: TableType.ACTION, tableId });
  console.log(JSON.stringify({
    table: { id: table?.id, cols: table?.cols.map((c) => c.id) },
    stream,
    rows: listed.items.map((row) => ({ id: row.id, cells: fromCells(row.cells) })),
    total: Number(listed.total),
    bigRoundTrip: listed.items.some((row) => fromCells(row.cells).n === BIG),
    file,
    batch,
  }, (_key, value) => (typeof value === "bigint" ? value.toString() : value), 2));
}

main().catch((err: unknown) => {
  // A gRPC failure: its code and message, then a non-zero exit.
  if (err instanceof ConnectError) {
    console.error(`error: code ${err.code} (${Code[err.code]}): ${err.rawMessage}`);
  } else {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  }
  process.exit(1);
});
