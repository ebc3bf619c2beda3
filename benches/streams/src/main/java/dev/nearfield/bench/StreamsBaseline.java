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
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
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
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.WindowBytesStoreSupplier;
import org.apache.kafka.streams.state.WindowStore;

/**
 * The Kafka Streams peer of the aggregator benchmark: the aggregator's computation, written
 * and tuned the way a Kafka Streams engineer would for this job, on the same Avro topic,
 * exactly-once. Every setting is listed in benches/README.md.
 *
 * <ul>
 *   <li>Decodes each SaleEvent (Avro single-object, schema from schemas/avro).
 *   <li>De-duplicates by (store_id, event_id) in a window store whose retention is the
 *       longest time any window accepts an event (size + close + allowed lateness of the
 *       day window), as nearfield remembers ids.
 *   <li>Counts per grid × SKU × window (5 m, 1 h, 1 d) in a key-value store ordered by
 *       window end: units sold, returned, preordered, net (sold + preorder − returned, as
 *       nearfield), revenue, events, distinct stores.
 *   <li>Emits each window once, final, when the task's largest occurred_at passes its end +
 *       40 s (nearfield's 30 s out-of-orderness + 10 s grace), the emit-final rule of
 *       {@code EmitStrategy.onWindowClose()}: checked on every record, before its puts; the
 *       closed windows are one range scan from the start of the store, emitted, deleted.
 * </ul>
 *
 * <p>The DSL's {@code groupBy(grid × SKU).windowedBy(...).emitStrategy(onWindowClose())}
 * would re-key and so add a repartition topic: every event written to Kafka and read back
 * once more. The input is already partitioned by grid, so the Processor API does the same
 * work as nearfield and no more. Counts are not in window stores: with the record cache,
 * a window store's time-range scan ({@code fetchAll}) walks the store's whole cache, which
 * was half of the CPU in a profile (benches/README.md); a key-value store's range scan
 * walks only the range.
 *
 * <p>Usage: {@code StreamsBaseline BROKERS TOPIC N APP_ID THREADS STORE WINDOWS} with STORE
 * {@code memory} or {@code rocksdb}. Runs until N records are processed and committed and
 * WINDOWS windows emitted, then reads its output topic back (read committed) and prints one
 * JSON line like aggregator_bench's phases, with {@code windows_out} and
 * {@code output_digest} (benches/README.md).
 */
public final class StreamsBaseline {
  static final long[] SIZES = {300_000L, 3_600_000L, 86_400_000L};
  /** nearfield's default allowed lateness per size. */
  static final long[] LATENESS = {600_000L, 7_200_000L, 172_800_000L};
  /** nearfield's out-of-orderness (30 s) + grace (10 s). */
  static final long CLOSE_AFTER = 40_000L;
  static final long DEDUPE_RETENTION = SIZES[2] + CLOSE_AFTER + LATENESS[2];
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
    private WindowStore<Long, byte[]> dedupe;
    private KeyValueStore<String, byte[]> counts;
    private long maxEventTime = Long.MIN_VALUE;
    /** The smallest event time at which some window closes. */
    private long nextClose = Long.MIN_VALUE;

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
      long at = (Long) reuse.get("occurred_at");
      if (dedupe.fetch(id, at) != null) {
        return;
      }
      if (at > maxEventTime) {
        maxEventTime = at;
        if (maxEventTime >= nextClose) {
          emitClosed(rec.timestamp());
        }
      }
      dedupe.put(id, new byte[] {1}, at);
      String kind = reuse.get("kind").toString();
      long q = (Integer) reuse.get("quantity");
      long price = (Long) reuse.get("unit_price_minor");
      long sold = kind.equals("SALE") ? q : 0;
      long returned = kind.equals("RETURN") ? q : 0;
      long pre = kind.equals("PREORDER") ? q : 0;
      long net = sold + pre - returned;
      long revenue = (sold - returned) * price;
      String cell = "|" + reuse.get("grid_id") + "|" + reuse.get("sku");
      long store = fnv(storeId, "");
      for (int s = 0; s < SIZES.length; s++) {
        long start = Math.floorDiv(at, SIZES[s]) * SIZES[s];
        // End first (13 digits until the year 2286): closed windows are a prefix range.
        String key = (start + SIZES[s]) + "|" + s + cell;
        counts.put(key, add(counts.get(key), sold, returned, pre, net, revenue, store));
      }
    }

    /** Emits and deletes every window the task's event time closed (emit-final). */
    void emitClosed(long timestamp) {
      long watermark = maxEventTime - CLOSE_AFTER;
      nextClose = Long.MAX_VALUE;
      for (long size : SIZES) {
        long lastClosedEnd = Math.floorDiv(watermark, size) * size;
        nextClose = Math.min(nextClose, lastClosedEnd + size + CLOSE_AFTER);
      }
      List<KeyValue<String, byte[]>> closed = new ArrayList<>();
      // Keys "end|..." with end <= watermark sort below the digits of watermark + 1.
      try (KeyValueIterator<String, byte[]> it = counts.range("0", Long.toString(watermark + 1))) {
        while (it.hasNext()) {
          closed.add(it.next());
        }
      }
      for (KeyValue<String, byte[]> kv : closed) {
        String[] p = kv.key.split("\\|");
        long end = Long.parseLong(p[0]);
        long size = SIZES[Integer.parseInt(p[1])];
        forward(p[2] + "|" + p[3], end - size, size, kv.value, watermark, timestamp);
        counts.delete(kv.key);
      }
    }

    void forward(String cell, long start, long size, byte[] value, long watermark, long ts) {
      int bar = cell.indexOf('|');
      ByteBuffer v = ByteBuffer.wrap(value);
      GenericRecord w = new GenericData.Record(windowSchema);
      String sku = cell.substring(bar + 1);
      w.put("grid_id", cell.substring(0, bar));
      w.put("sku", sku);
      w.put("window_start", start);
      w.put("window_end", start + size);
      w.put("units_sold", v.getLong(0));
      w.put("units_returned", v.getLong(8));
      w.put("preorder_units", v.getLong(16));
      w.put("net_units", v.getLong(24));
      w.put("revenue_minor", v.getLong(32));
      w.put("currency", "CNY");
      w.put("event_count", v.getLong(40));
      w.put("distinct_stores", (value.length - 48) / 8);
      w.put("stores_reporting", 0);
      w.put("stores_expected", 0);
      w.put("stores_pending", 0);
      w.put("revision", 0);
      w.put("is_final", true);
      w.put("watermark", watermark);
      w.put("source_partition", ctx.recordMetadata().map(m -> m.partition()).orElse(-1));
      w.put("last_event_at", maxEventTime);
      w.put("emitted_at", System.currentTimeMillis());
      ByteArrayOutputStream out = new ByteArrayOutputStream(128);
      out.writeBytes(windowHeader);
      encoder = EncoderFactory.get().binaryEncoder(out, encoder);
      try {
        writer.write(w, encoder);
        encoder.flush();
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      ctx.forward(new Record<>(sku, out.toByteArray(), ts));
      EMITTED.incrementAndGet();
    }
  }

  static double[] cpuAndPeakRss() throws IOException {
    double cpu =
        ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
                .getProcessCpuTime()
            / 1e9;
    double hwm = 0;
    double rss = 0;
    for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
      if (l.startsWith("VmHWM:")) {
        hwm = Double.parseDouble(l.replaceAll("[^0-9]", "")) / 1024.0;
      }
      if (l.startsWith("VmRSS:")) {
        rss = Double.parseDouble(l.replaceAll("[^0-9]", "")) / 1024.0;
      }
    }
    return new double[] {cpu, hwm, rss};
  }

  static WindowBytesStoreSupplier windows(String store, String name, long retention, long size) {
    Duration r = Duration.ofMillis(retention);
    Duration s = Duration.ofMillis(size);
    return store.equals("rocksdb")
        ? Stores.persistentWindowStore(name, r, s, false)
        : Stores.inMemoryWindowStore(name, r, s, false);
  }

  static StreamsBuilder topology(String topic, String out, String store) {
    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(
        Stores.keyValueStoreBuilder(
                store.equals("rocksdb")
                    ? Stores.persistentKeyValueStore("counts")
                    : Stores.inMemoryKeyValueStore("counts"),
                Serdes.String(), Serdes.ByteArray())
            .withCachingEnabled());
    builder.addStateStore(
        Stores.windowStoreBuilder(windows(store, "dedupe", DEDUPE_RETENTION, 1),
                Serdes.Long(), Serdes.ByteArray())
            .withCachingEnabled());
    String[] names = {"counts", "dedupe"};
    builder.stream(topic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
        .process(Aggregate::new, names)
        .to(out, Produced.with(Serdes.String(), Serdes.ByteArray()));
    return builder;
  }

  /**
   * Every final window in {@code topic}, read committed from the start to the end: the
   * number of distinct windows and the digest of benches/README.md.
   */
  static String[] readDigest(String brokers, String topic, long want) throws Exception {
    Properties c = new Properties();
    c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10_000);
    Schema schema = schema("DemandWindow");
    GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
    Map<String, long[]> windows = new HashMap<>();
    long records = 0;
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(c, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> parts = new ArrayList<>();
      consumer.partitionsFor(topic).forEach(p -> parts.add(new TopicPartition(topic, p.partition())));
      consumer.assign(parts);
      consumer.seekToBeginning(parts);
      Map<TopicPartition, Long> ends = consumer.endOffsets(parts);
      Set<TopicPartition> open = new HashSet<>(parts);
      BinaryDecoder d = null;
      GenericRecord r = null;
      long deadline = System.nanoTime() + 600_000_000_000L;
      while (!open.isEmpty() && System.nanoTime() < deadline) {
        for (ConsumerRecord<byte[], byte[]> m : consumer.poll(Duration.ofMillis(200))) {
          byte[] b = m.value();
          d = DecoderFactory.get().binaryDecoder(b, 10, b.length - 10, d);
          r = reader.read(r, d);
          if (!(Boolean) r.get("is_final")) {
            continue;
          }
          records++;
          String key = r.get("grid_id") + "," + r.get("sku") + "," + r.get("window_start") + ","
              + r.get("window_end");
          long[] f = {(Integer) r.get("revision"), (Long) r.get("net_units"),
              (Long) r.get("event_count")};
          long[] old = windows.get(key);
          if (old == null || old[0] < f[0]) {
            windows.put(key, f);
          }
        }
        open.removeIf(tp -> consumer.position(tp) >= ends.get(tp));
      }
    }
    List<String> lines = new ArrayList<>(windows.size());
    windows.forEach((k, f) -> lines.add(k + "," + f[1] + "," + f[2] + "\n"));
    // Bytewise order: the lines are ASCII, where UTF-16 order is byte order.
    lines.sort(null);
    MessageDigest sha = MessageDigest.getInstance("SHA-256");
    for (String l : lines) {
      sha.update(l.getBytes(StandardCharsets.UTF_8));
    }
    return new String[] {
      Integer.toString(windows.size()), Long.toString(records), HexFormat.of().formatHex(sha.digest())
    };
  }

  public static void main(String[] args) throws Exception {
    if (args.length < 7) {
      System.err.println("usage: StreamsBaseline BROKERS TOPIC N APP_ID THREADS memory|rocksdb WINDOWS");
      System.exit(2);
    }
    String brokers = args[0];
    String topic = args[1];
    long n = Long.parseLong(args[2]);
    String appId = args[3];
    int threads = Integer.parseInt(args[4]);
    String store = args[5];
    long want = Long.parseLong(args[6]);
    if (!store.equals("memory") && !store.equals("rocksdb")) {
      System.err.println("STORE: memory or rocksdb");
      System.exit(2);
    }
    double cpu0 = cpuAndPeakRss()[0];
    long t0 = System.nanoTime();
    String out = appId + "-demand";

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 500);
    p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 256L << 20);
    p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("streams-baseline").toString());
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // The producer settings of nearfield's stages.
    p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), "lz4");
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), 5);
    Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, brokers));
    // The output topic, like demand.v1 (Streams creates only its internal topics).
    int parts = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic)
        .partitions().size();
    admin.createTopics(List.of(new NewTopic(out, parts, (short) 1))).all().get();
    KafkaStreams streams = new KafkaStreams(topology(topic, out, store).build(), p);
    List<double[]> samples = new ArrayList<>();
    Thread sampler = new Thread(() -> {
      try {
        while (!Thread.currentThread().isInterrupted()) {
          double[] now = cpuAndPeakRss();
          synchronized (samples) {
            samples.add(new double[] {PROCESSED.get(), now[2]});
          }
          Thread.sleep(100);
        }
      } catch (InterruptedException | IOException e) {
        Thread.currentThread().interrupt();
      }
    });
    sampler.setDaemon(true);
    sampler.start();
    streams.start();

    try (admin) {
      long deadline = System.nanoTime() + 1_800_000_000_000L;
      while (PROCESSED.get() < n || EMITTED.get() < want) {
        if (System.nanoTime() > deadline) {
          System.err.printf("streams: %d of %d records, %d of %d windows after 30 min%n",
              PROCESSED.get(), n, EMITTED.get(), want);
          System.exit(1);
        }
        Thread.sleep(20);
      }
      // Processed is not yet committed: wait until the group's offsets reach the ends.
      Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
      for (int i = 0; i < parts; i++) {
        latest.put(new TopicPartition(topic, i), OffsetSpec.latest());
      }
      Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends =
          admin.listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED))
              .all().get();
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
    sampler.interrupt();
    sampler.join();
    double slope = slope(samples);
    streams.close(Duration.ofSeconds(30));
    streams.cleanUp();
    String[] digest = want > 0 ? readDigest(brokers, out, want) : new String[] {"0", "0", ""};
    System.out.printf(java.util.Locale.ROOT,
        "{\"phase\":\"%s\",\"events\":%d,\"seconds\":%.2f,\"events_per_s\":%.0f,"
            + "\"cpu_s\":%.2f,\"events_per_cpu_s\":%.0f,\"peak_rss_mb\":%.1f,"
            + "\"rss_slope_mb_per_m_events\":%s,\"threads\":%d,\"store\":\"%s\","
            + "\"windows_emitted\":%d,\"windows_out\":%s,\"output_records\":%s,"
            + "\"output_digest\":\"%s\"}%n",
        store.equals("rocksdb") ? "streams_rocksdb" : "streams", n, secs, n / secs, cpu,
        n / Math.max(cpu, 0.01), end[1],
        Double.isNaN(slope) ? "null" : String.format(java.util.Locale.ROOT, "%.1f", slope), threads, store, EMITTED.get(), digest[0],
        digest[1], digest[2]);
    System.exit(0);
  }

  /** Least-squares slope of RSS (MiB) against records processed, per million records. */
  static double slope(List<double[]> s) {
    if (s.stream().mapToDouble(p -> p[0]).distinct().count() < 5) {
      return Double.NaN; // too short a run to say
    }
    double k = s.size();
    double mx = 0;
    double my = 0;
    for (double[] p : s) {
      mx += p[0] / k;
      my += p[1] / k;
    }
    double var = 0;
    double cov = 0;
    for (double[] p : s) {
      var += (p[0] - mx) * (p[0] - mx);
      cov += (p[0] - mx) * (p[1] - my);
    }
    return var > 0 ? cov / var * 1e6 : 0;
  }
}
