package dev.nearfield.bench;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams baseline of the aggregator benchmark: the aggregator's computation,
 * written the way a Kafka Streams engineer would, on the same Avro topic, exactly-once.
 *
 * <ul>
 *   <li>Decodes each SaleEvent (Avro single-object, schema from schemas/avro).
 *   <li>De-duplicates by (store_id, event_id) in a state store.
 *   <li>Counts per grid × SKU × window for the aggregator's default sizes (5 m, 1 h, 1 d):
 *       units sold, returned, preordered, net, revenue, events, distinct stores.
 *   <li>Per task watermark = max occurred_at − 30 s; a wall-clock punctuator (1 s) emits each
 *       window whose end + 10 s grace the watermark passed, as an Avro DemandWindow, and
 *       deletes it.
 * </ul>
 *
 * Input keys are grid ids and the counts are per grid, so no repartition is needed (the
 * Processor API, like nearfield's aggregator). State stores are in memory with caching and
 * changelogs (the Streams default), {@code processing.guarantee=exactly_once_v2}, commit
 * every 500 ms like nearfield. Dedupe entries are not expired (nearfield expires them with
 * the windows): that only favours the baseline.
 *
 * <p>Usage: {@code StreamsBaseline BROKERS TOPIC N APP_ID [THREADS]}. Runs until N events
 * are processed and committed, then prints one JSON line like aggregator_bench's phases.
 */
public final class StreamsBaseline {
  static final long[] SIZES = {300_000L, 3_600_000L, 86_400_000L};
  static final long OUT_OF_ORDERNESS = 30_000L;
  static final long GRACE = 10_000L;
  static final AtomicLong PROCESSED = new AtomicLong();
  static final AtomicLong EMITTED = new AtomicLong();

  private StreamsBaseline() {}

  static Schema schema(String record) {
    try (InputStream in =
        StreamsBaseline.class.getResourceAsStream("/nearfield/schemas/avro/" + record + ".avsc")) {
      return new Schema.Parser().parse(new String(in.readAllBytes(), StandardCharsets.UTF_8));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Counts of one grid × SKU × window: 6 longs, then the distinct stores' hashes. */
  static byte[] add(byte[] old, long sold, long returned, long pre, long net, long revenue,
      long store) {
    int stores = old == null ? 0 : (old.length - 48) / 8;
    ByteBuffer in = old == null ? null : ByteBuffer.wrap(old);
    boolean known = false;
    if (in != null) {
      for (int i = 0; i < stores; i++) {
        if (in.getLong(48 + 8 * i) == store) {
          known = true;
          break;
        }
      }
    }
    ByteBuffer out = ByteBuffer.allocate(48 + 8 * (stores + (known ? 0 : 1)));
    long[] v = new long[6];
    if (in != null) {
      for (int i = 0; i < 6; i++) {
        v[i] = in.getLong(8 * i);
      }
    }
    v[0] += sold;
    v[1] += returned;
    v[2] += pre;
    v[3] += net;
    v[4] += revenue;
    v[5] += 1;
    for (long x : v) {
      out.putLong(x);
    }
    if (in != null) {
      out.put(old, 48, 8 * stores);
    }
    if (!known) {
      out.putLong(store);
    }
    return out.array();
  }

  static long fnv(String a, String b) {
    long h = 0xcbf29ce484222325L;
    for (int i = 0; i < a.length(); i++) {
      h = (h ^ a.charAt(i)) * 0x100000001b3L;
    }
    h = (h ^ 0xff) * 0x100000001b3L;
    for (int i = 0; i < b.length(); i++) {
      h = (h ^ b.charAt(i)) * 0x100000001b3L;
    }
    return h;
  }

  static final class Aggregate implements Processor<String, byte[], String, byte[]> {
    private final Schema saleSchema = schema("SaleEvent");
    private final Schema windowSchema = schema("DemandWindow");
    private final GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(saleSchema);
    private final GenericDatumWriter<GenericRecord> writer =
        new GenericDatumWriter<>(windowSchema);
    private final byte[] saleFp = fingerprint(saleSchema);
    private final byte[] windowHeader = header(windowSchema);
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;
    private GenericRecord reuse;
    private ProcessorContext<String, byte[]> ctx;
    private KeyValueStore<String, byte[]> counts;
    private KeyValueStore<Long, Long> dedupe;
    private long maxEventTime = Long.MIN_VALUE;

    static byte[] fingerprint(Schema s) {
      return ByteBuffer.allocate(8)
          .order(ByteOrder.LITTLE_ENDIAN)
          .putLong(SchemaNormalization.parsingFingerprint64(s))
          .array();
    }

    static byte[] header(Schema s) {
      byte[] fp = fingerprint(s);
      byte[] h = new byte[10];
      h[0] = (byte) 0xC3;
      h[1] = 0x01;
      System.arraycopy(fp, 0, h, 2, 8);
      return h;
    }

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
      ctx = context;
      counts = context.getStateStore("counts");
      dedupe = context.getStateStore("dedupe");
      context.schedule(Duration.ofSeconds(1), PunctuationType.WALL_CLOCK_TIME, this::close);
    }

    @Override
    public void process(Record<String, byte[]> rec) {
      PROCESSED.incrementAndGet();
      byte[] b = rec.value();
      if (b == null || b.length < 10 || b[0] != (byte) 0xC3 || b[1] != 0x01) {
        return; // nearfield sends these to the DLQ; the bench topic has none
      }
      for (int i = 0; i < 8; i++) {
        if (b[2 + i] != saleFp[i]) {
          return;
        }
      }
      try {
        decoder = DecoderFactory.get().binaryDecoder(b, 10, b.length - 10, decoder);
        reuse = reader.read(reuse, decoder);
      } catch (IOException | RuntimeException e) {
        return;
      }
      String storeId = reuse.get("store_id").toString();
      long id = fnv(storeId, reuse.get("event_id").toString());
      if (dedupe.get(id) != null) {
        return;
      }
      long at = (Long) reuse.get("occurred_at");
      maxEventTime = Math.max(maxEventTime, at);
      dedupe.put(id, at);
      String kind = reuse.get("kind").toString();
      long q = (Integer) reuse.get("quantity");
      long price = (Long) reuse.get("unit_price_minor");
      long sold = kind.equals("SALE") ? q : 0;
      long returned = kind.equals("RETURN") ? q : 0;
      long pre = kind.equals("PREORDER") ? q : 0;
      long net = sold - returned;
      long revenue = (sold - returned) * price;
      String cell = "|" + reuse.get("grid_id") + "|" + reuse.get("sku");
      long store = fnv(storeId, "");
      for (int s = 0; s < SIZES.length; s++) {
        long start = Math.floorDiv(at, SIZES[s]) * SIZES[s];
        // end first (13 digits until the year 2286), so closed windows are a range scan
        String key = (start + SIZES[s]) + "|" + s + cell;
        counts.put(key, add(counts.get(key), sold, returned, pre, net, revenue, store));
      }
    }

    /** Emits and deletes every window the watermark closed. */
    void close(long wallNow) {
      if (maxEventTime == Long.MIN_VALUE) {
        return;
      }
      long watermark = maxEventTime - OUT_OF_ORDERNESS;
      String to = Long.toString(watermark - GRACE + 1);
      List<KeyValue<String, byte[]>> closed = new ArrayList<>();
      try (KeyValueIterator<String, byte[]> it = counts.range("0", to)) {
        while (it.hasNext()) {
          closed.add(it.next());
        }
      }
      for (KeyValue<String, byte[]> kv : closed) {
        String[] p = kv.key.split("\\|");
        long end = Long.parseLong(p[0]);
        long size = SIZES[Integer.parseInt(p[1])];
        ByteBuffer v = ByteBuffer.wrap(kv.value);
        GenericRecord w = new GenericData.Record(windowSchema);
        w.put("grid_id", p[2]);
        w.put("sku", p[3]);
        w.put("window_start", end - size);
        w.put("window_end", end);
        w.put("units_sold", v.getLong(0));
        w.put("units_returned", v.getLong(8));
        w.put("preorder_units", v.getLong(16));
        w.put("net_units", v.getLong(24));
        w.put("revenue_minor", v.getLong(32));
        w.put("currency", "CNY");
        w.put("event_count", v.getLong(40));
        w.put("distinct_stores", (kv.value.length - 48) / 8);
        w.put("stores_reporting", 0);
        w.put("stores_expected", 0);
        w.put("revision", 0);
        w.put("is_final", true);
        w.put("watermark", watermark);
        w.put("last_event_at", maxEventTime);
        w.put("emitted_at", wallNow);
        ByteArrayOutputStream out = new ByteArrayOutputStream(128);
        out.writeBytes(windowHeader);
        encoder = EncoderFactory.get().binaryEncoder(out, encoder);
        try {
          writer.write(w, encoder);
          encoder.flush();
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
        ctx.forward(new Record<>(p[3], out.toByteArray(), wallNow));
        counts.delete(kv.key);
        EMITTED.incrementAndGet();
      }
    }
  }

  static double[] cpuAndPeakRss() throws IOException {
    double cpu =
        ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime()
            / 1e9;
    double hwm = 0;
    for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
      if (l.startsWith("VmHWM:")) {
        hwm = Double.parseDouble(l.replaceAll("[^0-9]", "")) / 1024.0;
      }
    }
    return new double[] {cpu, hwm};
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 4) {
      System.err.println("usage: StreamsBaseline BROKERS TOPIC N APP_ID [THREADS]");
      System.exit(2);
    }
    String brokers = args[0];
    String topic = args[1];
    long n = Long.parseLong(args[2]);
    String appId = args[3];
    int threads = args.length > 4 ? Integer.parseInt(args[4]) : 2;
    double cpu0 = cpuAndPeakRss()[0];
    long t0 = System.nanoTime();

    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(
        Stores.keyValueStoreBuilder(
                Stores.inMemoryKeyValueStore("counts"), Serdes.String(), Serdes.ByteArray())
            .withCachingEnabled());
    builder.addStateStore(
        Stores.keyValueStoreBuilder(
                Stores.inMemoryKeyValueStore("dedupe"), Serdes.Long(), Serdes.Long())
            .withCachingEnabled());
    builder.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .process(Aggregate::new, "counts", "dedupe")
        .to(appId + "-demand", Produced.with(Serdes.String(), Serdes.ByteArray()));

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 500);
    p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("streams-baseline").toString());
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers));
    // The output topic, like demand.v1 (Streams creates only its internal topics).
    int parts = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic)
        .partitions().size();
    admin.createTopics(List.of(new NewTopic(appId + "-demand", parts, (short) 1))).all().get();
    KafkaStreams streams = new KafkaStreams(builder.build(), p);
    streams.start();

    try (admin) {
      while (PROCESSED.get() < n) {
        Thread.sleep(20);
      }
      // Processed is not yet committed: wait until the group's offsets reach the ends.
      Map<TopicPartition, OffsetSpec> latest = new java.util.HashMap<>();
      for (int i = 0; i < parts; i++) {
        latest.put(new TopicPartition(topic, i), OffsetSpec.latest());
      }
      Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends =
          admin.listOffsets(latest, new org.apache.kafka.clients.admin.ListOffsetsOptions(
              IsolationLevel.READ_COMMITTED)).all().get();
      while (true) {
        Map<TopicPartition, OffsetAndMetadata> committed =
            admin.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
        boolean done = true;
        for (var e : ends.entrySet()) {
          OffsetAndMetadata c = committed.get(e.getKey());
          if (c == null || c.offset() < e.getValue().offset()) {
            done = false;
          }
        }
        if (done) {
          break;
        }
        Thread.sleep(20);
      }
    }
    double secs = (System.nanoTime() - t0) / 1e9;
    double[] end = cpuAndPeakRss();
    double cpu = end[0] - cpu0;
    streams.close(Duration.ofSeconds(30));
    streams.cleanUp();
    System.out.printf(
        "{\"phase\":\"streams\",\"events\":%d,\"seconds\":%.2f,\"events_per_s\":%.0f,"
            + "\"cpu_s\":%.2f,\"events_per_cpu_s\":%.0f,\"peak_rss_mb\":%.1f,"
            + "\"windows_emitted\":%d,\"threads\":%d}%n",
        n, secs, n / secs, cpu, n / Math.max(cpu, 0.01), end[1], EMITTED.get(), threads);
    System.exit(0);
  }
}
