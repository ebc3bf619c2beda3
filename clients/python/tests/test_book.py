from nearfield_plans import Outcome, PlanBook, PlanKey, PlanSignal

DAY = 86_400_000


def plan(sid, region, horizon, revision=0, supersedes=None, units=100):
    return PlanSignal(
        signal_id=sid, supplier_id="dairy-east", factory_id="plant-7", sku="SKU-MILK-1L",
        warehouse_id="wh-1", region=region, horizon_start=horizon, horizon_end=horizon + DAY,
        observed_units=units, forecast_units=float(units), forecast_low=units * 0.9,
        forecast_high=units * 1.1, interval_coverage=0.8, recommended_units=units, moq=100,
        batch_size=50, reason="REVISION" if revision else "THRESHOLD", firmness="FIRM",
        contributing_grids=["8831aa5551fffff"], contributing_stores=6, stores_reporting=6,
        stores_expected=6, based_on_watermark=0, generated_at=0, revision=revision,
        supersedes=supersedes,
    )


def test_revisions_and_newer_decisions_replace_duplicates_and_stale_ones_do_not():
    book = PlanBook()
    a, b = plan("a", "r1", 0), plan("b", "r1", 0, units=200)
    a_rev, b_rev = plan("a1", "r1", 0, 1, "a", 150), plan("b1", "r1", 0, 1, "b", 250)
    other_region, other_horizon = plan("c", "r2", 0), plan("d", "r1", DAY)
    orphan_rev = plan("e1", "r3", 0, 1, "never-seen", 300)

    assert book.apply(a) is Outcome.NEW
    assert book.apply(a) is Outcome.DUPLICATE
    assert book.apply(b) is Outcome.REPLACED
    assert book.apply(a_rev) is Outcome.STALE
    assert book.get(PlanKey.of(b)) == b
    assert book.apply(b_rev) is Outcome.REVISED
    assert book.apply(b) is Outcome.DUPLICATE
    assert book.apply(other_region) is Outcome.NEW
    assert book.apply(other_horizon) is Outcome.NEW
    assert book.apply(orphan_rev) is Outcome.NEW
    assert book.current() == [b_rev, other_horizon, other_region, orphan_rev]

    book.evict_before(DAY + 1)
    assert book.current() == [other_horizon]
    assert book.apply(a) is Outcome.NEW  # an evicted id is forgotten
