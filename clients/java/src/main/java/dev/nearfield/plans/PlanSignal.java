package dev.nearfield.plans;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.List;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

/**
 * One production-plan signal as a factory reads it from {@code plan.<supplier_id>.v1}. Field
 * meanings are in {@code schemas/avro/PlanSignal.avsc} and {@code docs/factories.md}; times
 * are UTC milliseconds.
 */
public record PlanSignal(
    String signalId,
    String supplierId,
    String factoryId,
    String sku,
    String warehouseId,
    String region,
    long horizonStart,
    long horizonEnd,
    long observedUnits,
    double forecastUnits,
    double forecastLow,
    double forecastHigh,
    double intervalCoverage,
    long recommendedUnits,
    long moq,
    long batchSize,
    Reason reason,
    Firmness firmness,
    List<String> contributingGrids,
    int contributingStores,
    int storesReporting,
    int storesExpected,
    long basedOnWatermark,
    long generatedAt,
    int revision,
    String supersedes,
    double serviceLevel,
    double needUnits,
    List<Allocation> allocations) {

  /** The share of a warehouse plan that goes to one of its regions. */
  public record Allocation(
      String region,
      long units,
      double forecastUnits,
      double forecastLow,
      double forecastHigh,
      long observedUnits,
      int contributingStores) {}

  /** Why the signal was emitted. */
  public enum Reason {
    THRESHOLD,
    SCHEDULED,
    SURGE,
    REVISION
  }

  /** How binding the signal is (as in EDI 830). */
  public enum Firmness {
    FIRM,
    PLANNING
  }

  /** The decoder for plan topics (either framing). */
  public static final AvroCodec CODEC = AvroCodec.forRecord("PlanSignal");

  /** Decodes a plan-topic message value. */
  public static PlanSignal decode(byte[] bytes) throws DecodeException {
    return fromAvro(CODEC.decode(bytes));
  }

  /** From a record read with the current PlanSignal schema. */
  public static PlanSignal fromAvro(GenericRecord r) {
    List<String> grids = new ArrayList<>();
    for (Object g : (Iterable<?>) r.get("contributing_grids")) {
      grids.add(g.toString());
    }
    List<Allocation> allocations = new ArrayList<>();
    for (Object o : (Iterable<?>) r.get("allocations")) {
      GenericRecord a = (GenericRecord) o;
      allocations.add(new Allocation(
          str(a.get("region")),
          (Long) a.get("units"),
          (Double) a.get("forecast_units"),
          (Double) a.get("forecast_low"),
          (Double) a.get("forecast_high"),
          (Long) a.get("observed_units"),
          (Integer) a.get("contributing_stores")));
    }
    return new PlanSignal(
        str(r.get("signal_id")),
        str(r.get("supplier_id")),
        str(r.get("factory_id")),
        str(r.get("sku")),
        str(r.get("warehouse_id")),
        str(r.get("region")),
        (Long) r.get("horizon_start"),
        (Long) r.get("horizon_end"),
        (Long) r.get("observed_units"),
        (Double) r.get("forecast_units"),
        (Double) r.get("forecast_low"),
        (Double) r.get("forecast_high"),
        (Double) r.get("interval_coverage"),
        (Long) r.get("recommended_units"),
        (Long) r.get("moq"),
        (Long) r.get("batch_size"),
        Reason.valueOf(r.get("reason").toString()),
        Firmness.valueOf(r.get("firmness").toString()),
        List.copyOf(grids),
        (Integer) r.get("contributing_stores"),
        (Integer) r.get("stores_reporting"),
        (Integer) r.get("stores_expected"),
        (Long) r.get("based_on_watermark"),
        (Long) r.get("generated_at"),
        (Integer) r.get("revision"),
        str(r.get("supersedes")),
        (Double) r.get("service_level"),
        (Double) r.get("need_units"),
        List.copyOf(allocations));
  }

  /** As a record of the current PlanSignal schema. */
  public GenericRecord toAvro() {
    Schema s = CODEC.schema();
    GenericData.Record r = new GenericData.Record(s);
    r.put("signal_id", signalId);
    r.put("supplier_id", supplierId);
    r.put("factory_id", factoryId);
    r.put("sku", sku);
    r.put("warehouse_id", warehouseId);
    r.put("region", region);
    r.put("horizon_start", horizonStart);
    r.put("horizon_end", horizonEnd);
    r.put("observed_units", observedUnits);
    r.put("forecast_units", forecastUnits);
    r.put("forecast_low", forecastLow);
    r.put("forecast_high", forecastHigh);
    r.put("interval_coverage", intervalCoverage);
    r.put("recommended_units", recommendedUnits);
    r.put("moq", moq);
    r.put("batch_size", batchSize);
    r.put("reason", new GenericData.EnumSymbol(s.getField("reason").schema(), reason.name()));
    r.put(
        "firmness", new GenericData.EnumSymbol(s.getField("firmness").schema(), firmness.name()));
    r.put("contributing_grids", new GenericData.Array<>(s.getField("contributing_grids").schema(),
        contributingGrids));
    r.put("contributing_stores", contributingStores);
    r.put("stores_reporting", storesReporting);
    r.put("stores_expected", storesExpected);
    r.put("based_on_watermark", basedOnWatermark);
    r.put("generated_at", generatedAt);
    r.put("revision", revision);
    r.put("supersedes", supersedes);
    r.put("service_level", serviceLevel);
    r.put("need_units", needUnits);
    Schema allocationsSchema = s.getField("allocations").schema();
    List<GenericRecord> regions = new ArrayList<>();
    for (Allocation a : allocations) {
      GenericData.Record x = new GenericData.Record(allocationsSchema.getElementType());
      x.put("region", a.region());
      x.put("units", a.units());
      x.put("forecast_units", a.forecastUnits());
      x.put("forecast_low", a.forecastLow());
      x.put("forecast_high", a.forecastHigh());
      x.put("observed_units", a.observedUnits());
      x.put("contributing_stores", a.contributingStores());
      regions.add(x);
    }
    r.put("allocations", new GenericData.Array<>(allocationsSchema, regions));
    return r;
  }

  /** The shared JSON form (as in schemas/testdata). */
  public JsonNode toJson() {
    return GoldenJson.toJson(toAvro(), CODEC.schema());
  }

  /** Where and when this plan applies; revisions and newer decisions replace by this key. */
  public PlanBook.Key key() {
    return new PlanBook.Key(sku, warehouseId, region, horizonStart, horizonEnd);
  }

  private static String str(Object o) {
    return o == null ? null : o.toString();
  }
}
