// Stores a numeric (protobuf-generated) enum as its lowercase member name — `running`, not
// `4` — so rows stay readable in psql/sqlite3 and survive renumbering in the .proto files.
import { Type, type EntityProperty, type Platform } from "@mikro-orm/core";
import { enumName, enumValue, type NumericEnum } from "../domain/enums.js";

export class EnumNameType<E extends NumericEnum> extends Type<number | null | undefined, string | null | undefined> {
  constructor(private readonly enumObject: E) {
    super();
  }

  override convertToDatabaseValue(value: number | null | undefined): string | null | undefined {
    if (value === null || value === undefined) return value;
    // Already a name (e.g. a raw query parameter): pass it through after checking it.
    if (typeof value === "string") {
      if (enumValue(this.enumObject, value) === undefined) throw new RangeError(`'${value}' is not a valid enum name`);
      return value;
    }
    return enumName(this.enumObject, value);
  }

  override convertToJSValue(value: string | null | undefined): number | null | undefined {
    if (value === null || value === undefined) return value;
    const v = enumValue(this.enumObject, value);
    if (v === undefined) throw new RangeError(`unknown enum name '${value}' in the database`);
    return v as number;
  }

  override compareAsType(): string {
    return "string";
  }

  override getColumnType(prop: EntityProperty, platform: Platform): string {
    return platform.getVarcharTypeDeclarationSQL({ length: prop.length ?? 64 });
  }
}
