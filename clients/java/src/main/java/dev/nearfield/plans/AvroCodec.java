package dev.nearfield.plans;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.AvroRuntimeException;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * Decodes and encodes one nearfield record type in either framing nearfield writes:
 *
 * <ul>
 *   <li>Avro single-object encoding (the default): {@code C3 01}, the 8-byte little-endian
 *       CRC-64-AVRO fingerprint of the writer schema, the datum. The writer schema is found by
 *       its fingerprint among the current and released schemas.
 *   <li>Confluent wire format (with a schema registry): {@code 00}, the 4-byte big-endian
 *       registry id, the datum. Registry ids are mapped to schema versions with {@link
 *       #withRegistryIds}.
 * </ul>
 *
 * Records are read into the current schema (Avro schema resolution), so a consumer built
 * today reads what an older writer wrote. Instances are immutable and thread-safe.
 */
public final class AvroCodec {
  private final String record;
  private final Schema reader;
  private final Map<Long, GenericDatumReader<GenericRecord>> byFingerprint = new HashMap<>();
  private final Map<String, Schema> byVersion = new HashMap<>();
  private final Map<Integer, GenericDatumReader<GenericRecord>> byRegistryId;

  private AvroCodec(
      String record, Map<Integer, GenericDatumReader<GenericRecord>> byRegistryId) {
    this.record = record;
    List<Schemas.Version> versions = Schemas.versions(record);
    this.reader = versions.get(0).schema(); // the current one
    for (Schemas.Version v : versions) {
      byVersion.put(v.version(), v.schema());
      byFingerprint.putIfAbsent(v.fingerprint(), new GenericDatumReader<>(v.schema(), reader));
    }
    this.byRegistryId = byRegistryId;
  }

  /** A codec for one record of the contract, e.g. {@code "PlanSignal"}. */
  public static AvroCodec forRecord(String record) {
    return new AvroCodec(record, Map.of());
  }

  /**
   * The same codec that also reads Confluent-framed messages: registry id → schema version
   * ({@code "current"}, {@code "v1"}, …) as registered in the schema registry.
   */
  public AvroCodec withRegistryIds(Map<Integer, String> ids) {
    Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
    for (Map.Entry<Integer, String> e : ids.entrySet()) {
      Schema writer = byVersion.get(e.getValue());
      if (writer == null) {
        throw new IllegalArgumentException(
            "registry id " + e.getKey() + ": unknown schema version " + e.getValue()
                + " (known: " + byVersion.keySet() + ")");
      }
      readers.put(e.getKey(), new GenericDatumReader<>(writer, reader));
    }
    return new AvroCodec(record, Map.copyOf(readers));
  }

  /** The schema records are read into (the current one). */
  public Schema schema() {
    return reader;
  }

  /** Decodes one message (either framing) into the current schema. */
  public GenericRecord decode(byte[] bytes) throws DecodeException {
    if (bytes == null || bytes.length == 0) {
      throw new DecodeException(record + ": empty message");
    }
    GenericDatumReader<GenericRecord> datumReader;
    int offset;
    if ((bytes[0] & 0xff) == 0xC3) {
      if (bytes.length < 10 || (bytes[1] & 0xff) != 0x01) {
        throw new DecodeException(
            record + ": truncated single-object header (needs 10 bytes, got " + bytes.length + ")");
      }
      long fp = ByteBuffer.wrap(bytes, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
      datumReader = byFingerprint.get(fp);
      if (datumReader == null) {
        throw new DecodeException(
            record + ": unknown writer schema fingerprint " + hex(bytes, 2, 8)
                + " (not the current or a released " + record + " schema)");
      }
      offset = 10;
    } else if (bytes[0] == 0x00) {
      if (bytes.length < 5) {
        throw new DecodeException(
            record + ": truncated Confluent header (needs 5 bytes, got " + bytes.length + ")");
      }
      int id = ByteBuffer.wrap(bytes, 1, 4).order(ByteOrder.BIG_ENDIAN).getInt();
      datumReader = byRegistryId.get(id);
      if (datumReader == null) {
        throw new DecodeException(
            record + ": registry schema id " + id + " is not mapped (see withRegistryIds)");
      }
      offset = 5;
    } else {
      throw new DecodeException(
          String.format(
              "%s: unknown framing: first byte 0x%02x is neither single-object (0xc3) nor"
                  + " Confluent (0x00)",
              record, bytes[0] & 0xff));
    }
    BinaryDecoder decoder =
        DecoderFactory.get().binaryDecoder(bytes, offset, bytes.length - offset, null);
    GenericRecord value;
    try {
      value = datumReader.read(null, decoder);
      if (!decoder.isEnd()) {
        throw new DecodeException(record + ": trailing bytes after the datum");
      }
    } catch (IOException | AvroRuntimeException | IndexOutOfBoundsException e) {
      throw new DecodeException(record + ": malformed datum: " + e.getMessage(), e);
    }
    return value;
  }

  /** Single-object encoding with the current schema. */
  public byte[] encodeSingleObject(GenericRecord value) {
    ByteBuffer header = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN);
    header.put((byte) 0xC3).put((byte) 0x01).putLong(Schemas.fingerprint(reader));
    return frame(header.array(), value);
  }

  /** Confluent wire format with the given registry id and the current schema. */
  public byte[] encodeConfluent(int registryId, GenericRecord value) {
    ByteBuffer header = ByteBuffer.allocate(5).order(ByteOrder.BIG_ENDIAN);
    header.put((byte) 0x00).putInt(registryId);
    return frame(header.array(), value);
  }

  private byte[] frame(byte[] header, GenericRecord value) {
    ByteArrayOutputStream out = new ByteArrayOutputStream(256);
    out.writeBytes(header);
    BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
    try {
      new GenericDatumWriter<GenericRecord>(reader).write(value, enc);
      enc.flush();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return out.toByteArray();
  }

  private static String hex(byte[] b, int off, int len) {
    StringBuilder sb = new StringBuilder();
    for (int i = off; i < off + len; i++) {
      sb.append(String.format("%02x", b[i] & 0xff));
    }
    return sb.toString();
  }
}
