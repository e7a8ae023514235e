// Cell values both ways: plain JavaScript values <-> rowforge.v1.CellValue.
//
// int64 is a bigint in both directions, so every integer a column accepts round-trips exactly
// (a number beyond Number.MAX_SAFE_INTEGER could not: it is refused rather than rounded).
// Writing: a bigint or a safe integer number becomes int_value, any other number
// double_value. Reading: int_value is a bigint, double_value a number, file_uri a string.
import { create } from "@bufbuild/protobuf";
import { NullValue } from "@bufbuild/protobuf/wkt";

import {
  type CellValue,
  CellValueListSchema,
  CellValueSchema,
  CellValueStructSchema,
  type RowValues,
  RowValuesSchema,
} from "./gen/rowforge/v1/common_pb.js";

/** What a cell can hold, as JavaScript. */
export type CellInput =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | CellInput[]
  | { [key: string]: CellInput };

/** What a cell reads back as: ints are bigints. */
export type CellOutput =
  | null
  | boolean
  | number
  | bigint
  | string
  | CellOutput[]
  | { [key: string]: CellOutput };

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A JavaScript value as a CellValue. Throws RangeError for an int outside int64 or an
 * unsafe integer number (pass a bigint), TypeError for what a cell cannot hold. */
export function toCellValue(value: CellInput): CellValue {
  if (value === null || value === undefined) {
    return create(CellValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } });
  }
  switch (typeof value) {
    case "string":
      return create(CellValueSchema, { kind: { case: "stringValue", value } });
    case "boolean":
      return create(CellValueSchema, { kind: { case: "boolValue", value } });
    case "bigint":
      if (value < INT64_MIN || value > INT64_MAX) {
        throw new RangeError(`integer ${value} is outside the 64-bit range`);
      }
      return create(CellValueSchema, { kind: { case: "intValue", value } });
    case "number":
      if (Number.isInteger(value)) {
        if (!Number.isSafeInteger(value)) {
          throw new RangeError(`integer ${value} is beyond 2^53 as a number and may have ` +
            "been rounded: pass it as a bigint");
        }
        return create(CellValueSchema, { kind: { case: "intValue", value: BigInt(value) } });
      }
      return create(CellValueSchema, { kind: { case: "doubleValue", value } });
    case "object":
      if (Array.isArray(value)) {
        return create(CellValueSchema, {
          kind: {
            case: "listValue",
            value: create(CellValueListSchema, { values: value.map(toCellValue) }),
          },
        });
      }
      return create(CellValueSchema, {
        kind: {
          case: "structValue",
          value: create(CellValueStructSchema, {
            fields: Object.fromEntries(
              Object.entries(value).map(([k, v]) => [k, toCellValue(v)])),
          }),
        },
      });
    default:
      throw new TypeError(`a cell cannot hold a ${typeof value}`);
  }
}

/** A CellValue as JavaScript (ints as bigints; unset is null). */
export function fromCellValue(value: CellValue | undefined): CellOutput {
  const kind = value?.kind;
  switch (kind?.case) {
    case undefined:
    case "nullValue":
      return null;
    case "intValue":
    case "doubleValue":
    case "boolValue":
    case "stringValue":
    case "fileUri":
      return kind.value;
    case "listValue":
      return kind.value.values.map(fromCellValue);
    case "structValue":
      return Object.fromEntries(
        Object.entries(kind.value.fields).map(([k, v]) => [k, fromCellValue(v)]));
  }
}

/** A row (column id to value) as RowValues. */
export function toRowValues(row: Record<string, CellInput>): RowValues {
  return create(RowValuesSchema, {
    values: Object.fromEntries(Object.entries(row).map(([k, v]) => [k, toCellValue(v)])),
  });
}

/** The cells of a row read back (column id to value). */
export function fromCells(cells: Record<string, { typedValue?: CellValue }>
): Record<string, CellOutput> {
  return Object.fromEntries(
    Object.entries(cells).map(([k, cell]) => [k, fromCellValue(cell.typedValue)]));
}
