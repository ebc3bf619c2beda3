package dev.nearfield.plans;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

/**
 * The plain JSON form of a record that every nearfield implementation shares (the golden
 * vectors' {@code .json} files): records as objects, unions as the bare value or {@code
 * null}, enums as their symbol, timestamps as integer milliseconds, {@code bytes} as a string
 * whose code points 0–255 are the bytes.
 */
public final class GoldenJson {
  private static final JsonNodeFactory F = JsonNodeFactory.instance;

  private GoldenJson() {}

  /** A decoded datum in the JSON form. */
  public static JsonNode toJson(Object datum, Schema schema) {
    switch (schema.getType()) {
      case RECORD: {
        GenericRecord r = (GenericRecord) datum;
        ObjectNode o = F.objectNode();
        for (Schema.Field f : schema.getFields()) {
          o.set(f.name(), toJson(r.get(f.pos()), f.schema()));
        }
        return o;
      }
      case UNION:
        if (datum == null) {
          return F.nullNode();
        }
        return toJson(datum, schema.getTypes().get(GenericData.get().resolveUnion(schema, datum)));
      case ARRAY: {
        ArrayNode a = F.arrayNode();
        for (Object item : (Iterable<?>) datum) {
          a.add(toJson(item, schema.getElementType()));
        }
        return a;
      }
      case NULL:
        return F.nullNode();
      case STRING:
      case ENUM:
        return F.textNode(datum.toString());
      case BYTES: {
        ByteBuffer b = ((ByteBuffer) datum).duplicate();
        byte[] raw = new byte[b.remaining()];
        b.get(raw);
        return F.textNode(new String(raw, StandardCharsets.ISO_8859_1));
      }
      case INT:
        return F.numberNode((Integer) datum);
      case LONG:
        return F.numberNode((Long) datum);
      case DOUBLE:
        return F.numberNode((Double) datum);
      case FLOAT:
        return F.numberNode((Float) datum);
      case BOOLEAN:
        return F.booleanNode((Boolean) datum);
      default:
        throw new IllegalArgumentException("type " + schema.getType() + " is not in the contract");
    }
  }

  /** The JSON form back to an Avro datum of {@code schema}; names the field on a mismatch. */
  public static Object fromJson(JsonNode json, Schema schema) {
    return fromJson(json, schema, schema.getName());
  }

  private static Object fromJson(JsonNode json, Schema schema, String path) {
    switch (schema.getType()) {
      case RECORD: {
        GenericData.Record r = new GenericData.Record(schema);
        for (Schema.Field f : schema.getFields()) {
          JsonNode v = json.get(f.name());
          if (v == null) {
            throw new IllegalArgumentException(path + "." + f.name() + ": missing");
          }
          r.put(f.pos(), fromJson(v, f.schema(), path + "." + f.name()));
        }
        return r;
      }
      case UNION:
        if (json.isNull()) {
          return null;
        }
        for (Schema branch : schema.getTypes()) {
          if (branch.getType() != Schema.Type.NULL) {
            return fromJson(json, branch, path);
          }
        }
        throw new IllegalArgumentException(path + ": union without a non-null branch");
      case ARRAY: {
        List<Object> items = new ArrayList<>();
        for (JsonNode item : json) {
          items.add(fromJson(item, schema.getElementType(), path + "[]"));
        }
        return new GenericData.Array<>(schema, items);
      }
      case STRING:
        return json.asText();
      case ENUM:
        if (!schema.hasEnumSymbol(json.asText())) {
          throw new IllegalArgumentException(path + ": unknown symbol " + json.asText());
        }
        return new GenericData.EnumSymbol(schema, json.asText());
      case BYTES:
        return ByteBuffer.wrap(json.asText().getBytes(StandardCharsets.ISO_8859_1));
      case INT:
        return json.intValue();
      case LONG:
        return json.longValue();
      case DOUBLE:
        return json.doubleValue();
      case FLOAT:
        return json.floatValue();
      case BOOLEAN:
        return json.booleanValue();
      case NULL:
        return null;
      default:
        throw new IllegalArgumentException(path + ": type " + schema.getType() + " not supported");
    }
  }
}
