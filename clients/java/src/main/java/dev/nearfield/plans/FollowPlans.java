package dev.nearfield.plans;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.FileOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Example: follows a supplier's plan topic and prints one JSON line per plan handled
 * ({@code {"partition","offset","outcome","plan"}}) and, on exit, the book of current plans
 * ({@code {"book":[...]}}).
 *
 * <pre>
 * java -cp "target/classes:$(cat target/classpath.txt)" dev.nearfield.plans.FollowPlans \
 *   --brokers 127.0.0.1:9092 --supplier dairy-east [--group G] [--topic T] \
 *   [--idle-exit-ms 5000] [--out F]
 * </pre>
 *
 * With {@code --idle-exit-ms} it exits once the topic has been idle that long with no lag;
 * otherwise it runs until SIGTERM/SIGINT.
 */
public final class FollowPlans {
  private FollowPlans() {}

  public static void main(String[] args) throws Exception {
    String brokers = System.getenv().getOrDefault("NEARFIELD_BROKERS", "127.0.0.1:9092");
    String supplier = null;
    String group = null;
    String topic = null;
    long idleExitMs = 0;
    String out = null;
    for (int i = 0; i < args.length; i++) {
      String v = i + 1 < args.length ? args[i + 1] : null;
      switch (args[i]) {
        case "--brokers" -> { brokers = need(args[i], v); i++; }
        case "--supplier" -> { supplier = need(args[i], v); i++; }
        case "--group" -> { group = need(args[i], v); i++; }
        case "--topic" -> { topic = need(args[i], v); i++; }
        case "--idle-exit-ms" -> { idleExitMs = Long.parseLong(need(args[i], v)); i++; }
        case "--out" -> { out = need(args[i], v); i++; }
        default -> usage("unknown argument " + args[i]);
      }
    }
    if (supplier == null) {
      usage("--supplier is required");
    }
    if (topic == null) {
      topic = PlanConsumer.topic(supplier);
    }
    if (group == null) {
      group = "factory-" + supplier;
    }
    ObjectMapper json = new ObjectMapper();
    OutputStream sink = out == null ? System.out : new FileOutputStream(out);
    try (PrintStream print = new PrintStream(sink, true, StandardCharsets.UTF_8);
        PlanConsumer consumer =
            new PlanConsumer(
                PlanConsumer.defaults(brokers, group), supplier, topic, PlanConsumer.STOP)) {
      AtomicBoolean running = new AtomicBoolean(true);
      Thread main = Thread.currentThread();
      Runtime.getRuntime().addShutdownHook(new Thread(() -> {
        running.set(false);
        consumer.wakeup();
        try {
          main.join(10_000);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
      }));
      AtomicLong lastActivity = new AtomicLong(System.currentTimeMillis());
      final long idle = idleExitMs;
      consumer.run(
          (rec, plan, outcome) -> {
            ObjectNode line = json.createObjectNode();
            line.put("partition", rec.partition());
            line.put("offset", rec.offset());
            line.put("outcome", outcome.name());
            line.set("plan", plan.toJson());
            print.println(json.writeValueAsString(line));
            lastActivity.set(System.currentTimeMillis());
          },
          () -> running.get()
              && (idle <= 0
                  || System.currentTimeMillis() - lastActivity.get() < idle
                  || consumer.lag() > 0));
      ArrayNode book = json.createArrayNode();
      for (PlanSignal p : consumer.book().current()) {
        book.add(p.toJson());
      }
      ObjectNode last = json.createObjectNode();
      last.set("book", book);
      print.println(json.writeValueAsString(last));
    }
  }

  private static String need(String flag, String value) {
    if (value == null) {
      usage(flag + " needs a value");
    }
    return value;
  }

  private static void usage(String why) {
    System.err.println("FollowPlans: " + why);
    System.err.println(
        "usage: FollowPlans --supplier ID [--brokers HOST:PORT] [--group G]"
            + " [--topic T] [--idle-exit-ms MS] [--out FILE]");
    System.exit(2);
  }
}
