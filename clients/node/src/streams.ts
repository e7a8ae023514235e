// Reading StreamAddRows / StreamRegenRows. With `coalesceEvents: true` in the request the
// server sends the events that are ready at once as one message's `batch` (fewer, fuller
// messages for many rows); `streamEvents` yields the events one by one either way.
import type {
  StreamAddRowsResponse,
  StreamRegenRowsResponse,
} from "./gen/rowforge/v1/table_service_pb.js";

/** The events of a row stream in order, batches opened (a batch is never nested). */
export async function* streamEvents<T extends StreamAddRowsResponse | StreamRegenRowsResponse>(
  messages: AsyncIterable<T>,
): AsyncGenerator<T> {
  for await (const message of messages) {
    if (message.event.case === "batch") {
      yield* message.event.value.events as T[];
    } else {
      yield message;
    }
  }
}
