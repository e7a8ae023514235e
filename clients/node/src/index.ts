// @rowforge/client: the typed TypeScript client of rowforge.
export { RowForge, type RowForgeOptions, type TLSOptions } from "./client.js";
export { streamEvents } from "./streams.js";
export {
  type CellInput,
  type CellOutput,
  fromCells,
  fromCellValue,
  toCellValue,
  toRowValues,
} from "./values.js";
export { Code, ConnectError } from "@connectrpc/connect";
export * from "./gen/rowforge/v1/batch_job_service_pb.js";
export * from "./gen/rowforge/v1/common_pb.js";
export * from "./gen/rowforge/v1/file_service_pb.js";
export * from "./gen/rowforge/v1/knowledge_service_pb.js";
export * from "./gen/rowforge/v1/model_service_pb.js";
export * from "./gen/rowforge/v1/table_service_pb.js";
