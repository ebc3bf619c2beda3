package dev.nearfield.plans;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * The latest plan per (sku, warehouse, region, horizon), built from a plan topic read in
 * order. The rules (the same in the Rust, Java and Python clients; see docs/factories.md):
 *
 * <ul>
 *   <li>a {@code signal_id} seen before is a re-emission: {@link Outcome#DUPLICATE}, nothing
 *       changes;
 *   <li>the first plan for a key is {@link Outcome#NEW};
 *   <li>a plan whose {@code supersedes} is the current plan's id is {@link Outcome#REVISED}
 *       and becomes current;
 *   <li>a plan whose {@code supersedes} names a signal that is no longer current (a newer
 *       decision already replaced it) is {@link Outcome#STALE}: kept out of the book, since
 *       the newer decision is revised on its own if the late data changes it;
 *   <li>any other plan for the key is a newer decision for the same horizon: {@link
 *       Outcome#REPLACED}, and it becomes current.
 * </ul>
 *
 * Not thread-safe; one consumer thread owns it.
 */
public final class PlanBook {
  /** Where and when a plan applies. {@code warehouseId} may be null. */
  public record Key(
      String sku, String warehouseId, String region, long horizonStart, long horizonEnd) {}

  /** What applying a signal did. */
  public enum Outcome {
    NEW,
    REPLACED,
    REVISED,
    DUPLICATE,
    STALE
  }

  private final Map<Key, PlanSignal> current = new HashMap<>();
  private final Map<String, Key> seen = new HashMap<>();

  /** Applies the next signal read from the topic. */
  public Outcome apply(PlanSignal plan) {
    if (seen.containsKey(plan.signalId())) {
      return Outcome.DUPLICATE;
    }
    Key key = plan.key();
    seen.put(plan.signalId(), key);
    PlanSignal cur = current.get(key);
    String sup = plan.supersedes();
    if (sup != null && seen.containsKey(sup) && (cur == null || !cur.signalId().equals(sup))) {
      return Outcome.STALE;
    }
    current.put(key, plan);
    if (cur == null) {
      return Outcome.NEW;
    }
    return sup != null && sup.equals(cur.signalId()) ? Outcome.REVISED : Outcome.REPLACED;
  }

  /** The current plan for a key. */
  public Optional<PlanSignal> get(Key key) {
    return Optional.ofNullable(current.get(key));
  }

  /** Every current plan, ordered by sku, warehouse, region, horizon. */
  public List<PlanSignal> current() {
    List<PlanSignal> out = new ArrayList<>(current.values());
    out.sort(
        Comparator.comparing(PlanSignal::sku)
            .thenComparing(p -> p.warehouseId() == null ? "" : p.warehouseId())
            .thenComparing(PlanSignal::region)
            .thenComparingLong(PlanSignal::horizonStart)
            .thenComparingLong(PlanSignal::horizonEnd));
    return out;
  }

  /** Forgets plans whose horizon ended before {@code horizonEndMs} (bounded memory). */
  public void evictBefore(long horizonEndMs) {
    Set<Key> gone = new HashSet<>();
    current.entrySet().removeIf(e -> {
      boolean old = e.getKey().horizonEnd() < horizonEndMs;
      if (old) {
        gone.add(e.getKey());
      }
      return old;
    });
    seen.values().removeIf(k -> gone.contains(k) || k.horizonEnd() < horizonEndMs);
  }

  /** Number of current plans. */
  public int size() {
    return current.size();
  }
}
