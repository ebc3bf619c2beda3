package dev.nearfield.plans;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;

/**
 * The nearfield Avro contract as bundled in this jar: {@code schemas/avro/*.avsc} of the
 * repository (the current schemas) and {@code schemas/released/<version>/*.avsc} (every
 * released version a writer may still use). Maven copies them at build time, so the jar
 * always carries the schemas it was tested against.
 */
public final class Schemas {
  /** Released schema versions, oldest first; a test checks it against schemas/released/. */
  public static final List<String> RELEASES = List.of("v1");

  /** Record names of the contract. */
  public static final List<String> RECORDS =
      List.of(
          "SaleEvent",
          "RejectedEvent",
          "DemandWindow",
          "PlanSignal",
          "Heartbeat",
          "StoreRecord",
          "CatalogRecord",
          "GridCoverage");

  /** One version of a record's schema. */
  public record Version(String version, Schema schema, long fingerprint) {}

  private Schemas() {}

  /** The schema new records are written with. */
  public static Schema current(String record) {
    return parse(load("avro/" + record + ".avsc", record));
  }

  /** The current schema, then each released version, newest first. */
  public static List<Version> versions(String record) {
    List<Version> out = new ArrayList<>();
    Schema cur = current(record);
    out.add(new Version("current", cur, fingerprint(cur)));
    for (int i = RELEASES.size() - 1; i >= 0; i--) {
      String v = RELEASES.get(i);
      String path = "released/" + v + "/" + record + ".avsc";
      if (Schemas.class.getResource("/nearfield/schemas/" + path) == null) {
        continue; // the record is newer than this release
      }
      Schema s = parse(load(path, record));
      out.add(new Version(v, s, fingerprint(s)));
    }
    return out;
  }

  /** CRC-64-AVRO of the schema's Parsing Canonical Form, as in the single-object header. */
  public static long fingerprint(Schema schema) {
    return SchemaNormalization.parsingFingerprint64(schema);
  }

  private static Schema parse(String json) {
    return new Schema.Parser().parse(json);
  }

  private static String load(String path, String record) {
    String resource = "/nearfield/schemas/" + path;
    try (InputStream in = Schemas.class.getResourceAsStream(resource)) {
      if (in == null) {
        throw new IllegalArgumentException(
            "no schema " + resource + " in the jar (record " + record + " unknown?)");
      }
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
