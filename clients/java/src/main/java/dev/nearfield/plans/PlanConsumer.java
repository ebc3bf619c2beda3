package dev.nearfield.plans;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.function.BooleanSupplier;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Follows one supplier's plan topic: decodes each {@link PlanSignal}, applies it to a {@link
 * PlanBook}, hands it to the application, and commits a record's offset only after the
 * handler returned for it. Reads {@code read_committed}, so only plans of committed emitter
 * transactions are seen. A handler that throws stops the consumer with the failed record
 * uncommitted: it is read again on restart (handlers must be idempotent, e.g. keyed by
 * {@code signal_id}).
 */
public final class PlanConsumer implements AutoCloseable {
  /** What the application does with each plan, in topic order. */
  @FunctionalInterface
  public interface Handler {
    void handle(ConsumerRecord<String, byte[]> record, PlanSignal plan, PlanBook.Outcome outcome)
        throws Exception;
  }

  /** What to do with a message that is not a valid plan for this supplier. */
  @FunctionalInterface
  public interface BadRecordPolicy {
    /** Return to skip the record (it is committed), throw to stop the consumer. */
    void onBadRecord(ConsumerRecord<String, byte[]> record, DecodeException error)
        throws Exception;
  }

  /** The default policy: stop, leaving the record uncommitted, with the reason. */
  public static final BadRecordPolicy STOP =
      (rec, err) -> {
        throw new DecodeException(
            rec.topic() + "/" + rec.partition() + "@" + rec.offset() + ": " + err.getMessage(),
            err);
      };

  private final KafkaConsumer<String, byte[]> consumer;
  private final String supplierId;
  private final String topic;
  private final PlanBook book = new PlanBook();
  private final BadRecordPolicy badRecords;

  /**
   * @param props Kafka consumer properties; {@link #defaults} gives the required ones
   * @param supplierId the supplier whose topic {@code plan.<supplierId>.v1} is read
   */
  public PlanConsumer(Properties props, String supplierId, BadRecordPolicy badRecords) {
    this(props, supplierId, topic(supplierId), badRecords);
  }

  /** The same on a topic of another name (a prefixed or mirrored plan topic). */
  public PlanConsumer(
      Properties props, String supplierId, String topic, BadRecordPolicy badRecords) {
    Properties p = new Properties();
    p.putAll(props);
    // Offsets are committed by this class after the handler, never automatically.
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.putIfAbsent(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    this.consumer =
        new KafkaConsumer<>(p, new StringDeserializer(), new ByteArrayDeserializer());
    this.supplierId = supplierId;
    this.topic = topic;
    this.badRecords = badRecords;
  }

  /** The plan topic of a supplier. */
  public static String topic(String supplierId) {
    return "plan." + supplierId + ".v1";
  }

  /** Minimal properties: brokers, group, start from the beginning of the topic. */
  public static Properties defaults(String bootstrapServers, String groupId) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, groupId);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    return p;
  }

  /** The plans seen so far, latest per key. */
  public PlanBook book() {
    return book;
  }

  /**
   * Polls and handles plans until {@code keepRunning} is false or {@link #wakeup} is called.
   */
  public void run(Handler handler, BooleanSupplier keepRunning) throws Exception {
    consumer.subscribe(List.of(topic));
    try {
      while (keepRunning.getAsBoolean()) {
        ConsumerRecords<String, byte[]> records = consumer.poll(Duration.ofMillis(200));
        Map<TopicPartition, OffsetAndMetadata> handled = new HashMap<>();
        try {
          for (ConsumerRecord<String, byte[]> rec : records) {
            handleOne(rec, handler);
            handled.put(
                new TopicPartition(rec.topic(), rec.partition()),
                new OffsetAndMetadata(rec.offset() + 1));
          }
        } finally {
          if (!handled.isEmpty()) {
            consumer.commitSync(handled);
          }
        }
      }
    } catch (WakeupException e) {
      // wakeup() asked us to stop
    }
  }

  private void handleOne(ConsumerRecord<String, byte[]> rec, Handler handler) throws Exception {
    PlanSignal plan;
    try {
      plan = PlanSignal.decode(rec.value());
      if (!supplierId.equals(plan.supplierId())) {
        throw new DecodeException(
            "supplier_id: " + plan.supplierId() + " on the topic of " + supplierId);
      }
    } catch (DecodeException e) {
      badRecords.onBadRecord(rec, e);
      return;
    }
    handler.handle(rec, plan, book.apply(plan));
  }

  /** Makes a blocked {@link #run} return (safe from another thread). */
  public void wakeup() {
    consumer.wakeup();
  }

  /** Number of records received and not yet read by this consumer (summed lag). */
  public long lag() {
    long lag = 0;
    for (TopicPartition tp : consumer.assignment()) {
      lag += consumer.currentLag(tp).orElse(0);
    }
    return lag;
  }

  @Override
  public void close() {
    consumer.close(CloseOptions.timeout(Duration.ofSeconds(5)));
  }
}
