#!/usr/bin/env node
// rowforge from Node.js: creates an action table, streams rows into it (StreamAddRows), then
// runs a small batch job and reads its results (StreamResults). Prints one JSON document.
//
//   ROWFORGE_ADDRESS=127.0.0.1:50051 node clients/node/example.js
//
// Uses only @grpc/grpc-js and @grpc/proto-loader with the .proto files in proto/.
'use strict';

const { RowforgeClient, toStruct, fromStruct, fromValue } = require('./rowforge');

async function streamRows(client, tableId) {
  const events = [];
  const text = {}; // "row/column" -> streamed text
  const call = client.stream(client.tables, 'StreamAddRows', {
    table_type: 'TABLE_TYPE_ACTION',
    table_id: tableId,
    data: [toStruct({ topic: 'gRPC' }), toStruct({ topic: 'Node.js' })],
  });
  for await (const message of call) {
    const kind = message.event; // the oneof member that is set
    events.push(kind);
    if (kind === 'delta') {
      const d = message.delta;
      const key = `${d.row_id}/${d.output_column_name}`;
      text[key] = (text[key] || '') + d.text;
    } else if (kind === 'cell_completed') {
      const c = message.cell_completed;
      const key = `${c.row_id}/${c.output_column_name}`;
      if (!(key in text)) text[key] = c.cell.text; // cells that streamed no delta
    }
  }
  return { events, text };
}

async function runBatch(client) {
  const { job } = await client.unary(client.batch, 'CreateJob', {
    model: '', system_instruction: 'Be brief.', job_type: 'node-example',
  });
  await client.unary(client.batch, 'AddRequests', {
    job_id: job.job_id,
    requests: [
      { request_id: 'n1', content_parts: [{ text: 'Say hello from Node.js' }] },
      {
        request_id: 'n2',
        content_parts: [{ text: 'Name a colour' }],
        output_schema: toStruct({
          type: 'object', properties: { colour: { type: 'string' } }, required: ['colour'],
        }),
        metadata: toStruct({ source: 'node' }),
      },
    ],
  });
  await client.unary(client.batch, 'SubmitJob', { job_id: job.job_id });
  const results = [];
  let final = null;
  // follow (the default) keeps the stream open until the job ends; no deadline on it.
  for await (const message of client.stream(client.batch, 'StreamResults',
    { job_id: job.job_id, cursor: 0 }, { deadline: false })) {
    if (message.event === 'result') {
      const r = message.result;
      results.push({
        sequence: r.sequence, request_id: r.request_id, state: r.state,
        response_text: r.response_text,
        response_json: r.response_json ? fromValue(r.response_json) : null,
        metadata: fromStruct(r.metadata),
      });
    } else if (message.event === 'job') {
      final = message.job;
    }
  }
  return { job_id: job.job_id, state: final && final.state, results };
}

async function main() {
  const client = new RowforgeClient();
  const tableId = `node_example_${Date.now()}`;
  try {
    const { table } = await client.unary(client.tables, 'CreateTable', {
      table_type: 'TABLE_TYPE_ACTION',
      table_id: tableId,
      cols: [
        { id: 'topic', dtype: 'str' },
        {
          id: 'summary', dtype: 'str',
          gen_config: { llm: { prompt: 'One sentence about ${topic}.', max_tokens: 40 } },
        },
      ],
    });
    const rows = await streamRows(client, tableId);
    const listed = await client.unary(client.tables, 'ListRows', {
      table_type: 'TABLE_TYPE_ACTION', table_id: tableId, limit: 10,
    });
    const batch = await runBatch(client);
    await client.unary(client.tables, 'DeleteTable', {
      table_type: 'TABLE_TYPE_ACTION', table_id: tableId,
    });
    console.log(JSON.stringify({
      table: { id: table.id, cols: table.cols.map((c) => c.id) },
      stream: rows,
      rows: listed.items.map((row) => ({
        id: row.id,
        cells: Object.fromEntries(Object.entries(row.cells).map(([k, c]) => [k, fromValue(c.value)])),
      })),
      total: listed.total,
      batch,
    }, null, 2));
  } finally {
    client.close();
  }
}

main().catch((err) => {
  // A gRPC error: its status code name and message, then a non-zero exit.
  console.error(`error: ${err.code !== undefined ? `code ${err.code}: ` : ''}${err.details || err.message}`);
  process.exit(1);
});
