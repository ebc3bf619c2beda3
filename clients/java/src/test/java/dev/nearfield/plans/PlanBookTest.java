package dev.nearfield.plans;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

class PlanBookTest {
  static PlanSignal plan(String id, String region, long horizon, int revision, String supersedes,
      long units) {
    return new PlanSignal(id, "dairy-east", "plant-7", "SKU-MILK-1L", "wh-1", region,
        horizon, horizon + 86_400_000L, units, units, units * 0.9, units * 1.1, 0.8, units, 100,
        50, revision == 0 ? PlanSignal.Reason.THRESHOLD : PlanSignal.Reason.REVISION,
        PlanSignal.Firmness.FIRM, List.of("8831aa5551fffff"), 6, 6, 6, 0, 0, revision,
        supersedes, 0.5, units, List.of());
  }

  @Test
  void revisionsAndNewerDecisionsReplaceDuplicatesAndStaleOnesDoNot() {
    PlanBook book = new PlanBook();
    PlanSignal a = plan("a", "r1", 0, 0, null, 100);
    PlanSignal b = plan("b", "r1", 0, 0, null, 200);
    PlanSignal aRev = plan("a1", "r1", 0, 1, "a", 150);
    PlanSignal bRev = plan("b1", "r1", 0, 1, "b", 250);
    PlanSignal otherRegion = plan("c", "r2", 0, 0, null, 100);
    PlanSignal otherHorizon = plan("d", "r1", 86_400_000L, 0, null, 100);
    PlanSignal orphanRev = plan("e1", "r3", 0, 1, "never-seen", 300);

    assertEquals(PlanBook.Outcome.NEW, book.apply(a));
    assertEquals(PlanBook.Outcome.DUPLICATE, book.apply(a));
    assertEquals(PlanBook.Outcome.REPLACED, book.apply(b));
    assertEquals(PlanBook.Outcome.STALE, book.apply(aRev));
    assertEquals(b, book.get(b.key()).orElseThrow());
    assertEquals(PlanBook.Outcome.REVISED, book.apply(bRev));
    assertEquals(PlanBook.Outcome.DUPLICATE, book.apply(b));
    assertEquals(PlanBook.Outcome.NEW, book.apply(otherRegion));
    assertEquals(PlanBook.Outcome.NEW, book.apply(otherHorizon));
    assertEquals(PlanBook.Outcome.NEW, book.apply(orphanRev));
    assertEquals(List.of(bRev, otherHorizon, otherRegion, orphanRev), book.current());

    book.evictBefore(86_400_000L + 1);
    assertEquals(List.of(otherHorizon), book.current());
    // An evicted id is forgotten, so an old re-emission shows up as NEW again: evict only
    // horizons that can no longer be re-read.
    assertEquals(PlanBook.Outcome.NEW, book.apply(a));
  }
}
