package dev.nearfield.plans;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;

/** Bad bytes get an exception naming the rule, never a crash or a wrong value. */
class CodecErrorsTest {
  static byte[] plan() throws Exception {
    return Files.readAllBytes(GoldenVectorsTest.SCHEMAS.resolve("testdata/PlanSignal/threshold.avro"));
  }

  static String error(byte[] bytes) {
    return assertThrows(DecodeException.class, () -> PlanSignal.decode(bytes)).getMessage();
  }

  @Test
  void namesEachRule() throws Exception {
    byte[] ok = plan();
    assertTrue(error(new byte[0]).contains("empty message"));
    assertTrue(error(new byte[] {0x7b}).contains("unknown framing"));
    assertTrue(error(Arrays.copyOf(ok, 6)).contains("truncated single-object header"));
    byte[] otherFp = ok.clone();
    otherFp[5] ^= 0x55;
    assertTrue(error(otherFp).contains("unknown writer schema fingerprint"));
    assertTrue(error(Arrays.copyOf(ok, ok.length - 3)).contains("malformed datum"));
    assertTrue(error(Arrays.copyOf(ok, ok.length + 1)).contains("trailing bytes"));
    assertTrue(error(new byte[] {0, 0, 0, 0, 9, 2}).contains("registry schema id 9"));
    // A SaleEvent is not a plan: its fingerprint is not a PlanSignal schema's.
    byte[] sale =
        Files.readAllBytes(GoldenVectorsTest.SCHEMAS.resolve("testdata/SaleEvent/sale.avro"));
    assertTrue(error(sale).contains("unknown writer schema fingerprint"));
  }

  @Test
  void everyTruncationIsAnErrorNotACrash() throws Exception {
    byte[] ok = plan();
    for (int n = 0; n < ok.length; n++) {
      byte[] cut = Arrays.copyOf(ok, n);
      assertThrows(DecodeException.class, () -> PlanSignal.decode(cut), "length " + n);
    }
  }
}
