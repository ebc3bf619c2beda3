package dev.nearfield.plans;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every golden vector in schemas/testdata decodes to its JSON form, and the JSON form encodes
 * back to the same bytes: the same check the Rust and Python implementations run.
 */
class GoldenVectorsTest {
  static final Path SCHEMAS = Path.of(System.getProperty("nearfield.schemas.dir", "../../schemas"));
  static final ObjectMapper JSON = new ObjectMapper();

  static Stream<Path> vectors() throws IOException {
    try (Stream<Path> files = Files.walk(SCHEMAS.resolve("testdata"))) {
      List<Path> found =
          files.filter(p -> p.toString().endsWith(".avro")).sorted().toList();
      assertFalse(found.isEmpty(), "no golden vectors under " + SCHEMAS.resolve("testdata"));
      return found.stream();
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("vectors")
  void decodesToTheJsonFormAndEncodesBack(Path path) throws Exception {
    String record = path.getParent().getFileName().toString();
    byte[] bytes = Files.readAllBytes(path);
    JsonNode golden =
        JSON.readTree(Files.readString(Path.of(path.toString().replaceAll("\\.avro$", ".json"))));
    AvroCodec codec = AvroCodec.forRecord(record);
    Schema schema = codec.schema();

    GenericRecord decoded = codec.decode(bytes);
    JsonNode asJson = GoldenJson.toJson(decoded, schema);
    assertTrue(
        asJson.equals(GoldenVectorsTest::sameValue, golden),
        record + ": decoded " + asJson + " differs from " + golden);

    GenericRecord fromJson = (GenericRecord) GoldenJson.fromJson(golden, schema);
    assertArrayEquals(bytes, codec.encodeSingleObject(fromJson), "JSON form encodes back");

    // The same datum in Confluent framing, with id 7 registered as the current schema.
    byte[] datum = Arrays.copyOfRange(bytes, 10, bytes.length);
    byte[] confluent = new byte[5 + datum.length];
    confluent[4] = 7;
    System.arraycopy(datum, 0, confluent, 5, datum.length);
    GenericRecord viaRegistry = codec.withRegistryIds(Map.of(7, "current")).decode(confluent);
    assertEquals(decoded, viaRegistry);
    assertArrayEquals(confluent, codec.encodeConfluent(7, fromJson));
  }

  @Test
  void planVectorsDecodeToTypedPlans() throws Exception {
    byte[] bytes = Files.readAllBytes(SCHEMAS.resolve("testdata/PlanSignal/revision.avro"));
    PlanSignal plan = PlanSignal.decode(bytes);
    assertEquals(PlanSignal.Reason.REVISION, plan.reason());
    assertEquals(1, plan.revision());
    assertEquals("sig-3f9a1c0e7b2d4a51", plan.supersedes());
    assertEquals(Double.doubleToRawLongBits(-0.0), Double.doubleToRawLongBits(plan.forecastUnits()));
    assertArrayEquals(bytes, PlanSignal.CODEC.encodeSingleObject(plan.toAvro()));
  }

  @Test
  void bundledReleasesMatchTheRepository() throws IOException {
    try (Stream<Path> dirs = Files.list(SCHEMAS.resolve("released"))) {
      List<String> onDisk = dirs.map(p -> p.getFileName().toString()).sorted().toList();
      assertEquals(onDisk, Schemas.RELEASES, "Schemas.RELEASES must list schemas/released/*");
    }
    for (String record : Schemas.RECORDS) {
      assertTrue(Files.exists(SCHEMAS.resolve("avro/" + record + ".avsc")), record);
    }
    try (Stream<Path> files = Files.list(SCHEMAS.resolve("avro"))) {
      assertEquals(Schemas.RECORDS.size(), files.count(), "Schemas.RECORDS lists every schema");
    }
  }

  /** Numbers compare by value (an int node equals a long node); doubles bit-exactly. */
  static int sameValue(JsonNode a, JsonNode b) {
    if (a.isNumber() && b.isNumber()) {
      if (a.isIntegralNumber() && b.isIntegralNumber()) {
        return Long.compare(a.longValue(), b.longValue());
      }
      return Double.compare(a.doubleValue(), b.doubleValue());
    }
    return a.equals(b) ? 0 : 1;
  }
}
