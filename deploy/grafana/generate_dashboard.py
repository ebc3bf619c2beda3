#!/usr/bin/env python3
"""Writes dashboards/nearfield.json: RED metrics per stage and pipeline health.
Regenerate after editing: python3 deploy/grafana/generate_dashboard.py"""
import json
import os

PANELS = [
    # (title, unit, [(expr, legend)])
    ("Ingest: requests/s by status", "reqps", [
        ('sum by (status) (rate(nearfield_ingest_requests_total[1m]))', "{{status}}")]),
    ("Ingest: errors (5xx share)", "percentunit", [
        ('sum(rate(nearfield_ingest_requests_total{status=~"5.."}[5m])) / clamp_min(sum(rate(nearfield_ingest_requests_total[5m])), 1e-9)', "5xx")]),
    ("Ingest: request duration p50 / p99", "s", [
        ('histogram_quantile(0.5, sum by (le) (rate(nearfield_ingest_request_duration_seconds_bucket[5m])))', "p50"),
        ('histogram_quantile(0.99, sum by (le) (rate(nearfield_ingest_request_duration_seconds_bucket[5m])))', "p99")]),
    ("Ingest: events accepted and rejected /s", "ops", [
        ('sum(rate(nearfield_ingest_events_accepted_total[1m]))', "accepted"),
        ('sum by (reason) (rate(nearfield_ingest_events_rejected_total[1m]))', "rejected {{reason}}")]),
    ("Ingest: auth failures and rate limits /s", "ops", [
        ('sum by (reason) (rate(nearfield_ingest_auth_failures_total[5m]))', "auth {{reason}}"),
        ('sum(rate(nearfield_ingest_rate_limited_total[5m]))', "rate limited")]),
    ("Aggregator: events /s by outcome", "ops", [
        ('sum by (outcome) (rate(nearfield_aggregator_events_total[1m]))', "{{outcome}}")]),
    ("Aggregator: consumer lag", "short", [
        ('sum by (instance) (nearfield_aggregator_consumer_lag)', "{{instance}}")]),
    ("Aggregator: watermark delay", "s", [
        ('max by (instance) (nearfield_aggregator_watermark_delay_seconds)', "{{instance}}")]),
    ("Aggregator: windows emitted /s", "ops", [
        ('sum by (kind) (rate(nearfield_aggregator_windows_emitted_total[5m]))', "{{kind}}")]),
    ("Aggregator: transaction p99 and aborts", "s", [
        ('histogram_quantile(0.99, sum by (le) (rate(nearfield_aggregator_transaction_seconds_bucket[5m])))', "p99"),
        ('sum(rate(nearfield_aggregator_transactions_total{outcome="aborted"}[5m]))', "aborts/s")]),
    ("Aggregator: state (keys, windows, bytes)", "short", [
        ('sum(nearfield_aggregator_keys)', "keys"),
        ('sum(nearfield_aggregator_windows)', "windows"),
        ('sum(nearfield_aggregator_state_bytes)', "bytes")]),
    ("Partitioning: misplaced grids (1 h) and a repartition copy's lag and rate", "short", [
        ('sum(increase(nearfield_aggregator_misplaced_grids_total[1h]))', "misplaced grids"),
        ('sum(nearfield_repartition_consumer_lag)', "copy lag (records)"),
        ('sum(rate(nearfield_repartition_records_total[1m]))', "copied /s")]),
    ("Emitter: windows /s by outcome", "ops", [
        ('sum by (outcome) (rate(nearfield_emitter_windows_total[5m]))', "{{outcome}}")]),
    ("Emitter: signals /h by reason and firmness", "short", [
        ('sum by (reason, firmness) (increase(nearfield_emitter_signals_total[1h]))', "{{reason}} {{firmness}}")]),
    ("Emitter: signals by supplier (24 h)", "short", [
        ('sum by (supplier) (increase(nearfield_emitter_supplier_signals_total[24h]))', "{{supplier}}")]),
    ("Emitter: lag and demand-clock delay", "short", [
        ('sum(nearfield_emitter_consumer_lag)', "lag"),
        ('max(nearfield_emitter_watermark_delay_seconds)', "clock delay (s)")]),
    ("Emitter: sale → signal latency p50 / p99", "s", [
        ('histogram_quantile(0.5, sum by (le) (rate(nearfield_emitter_event_to_signal_seconds_bucket[1h])))', "p50"),
        ('histogram_quantile(0.99, sum by (le) (rate(nearfield_emitter_event_to_signal_seconds_bucket[1h])))', "p99")]),
    ("Emitter: forecast interval hit share and privacy suppressions", "short", [
        ('sum(rate(nearfield_emitter_forecast_interval_total{outcome="hit"}[6h])) / clamp_min(sum(rate(nearfield_emitter_forecast_interval_total[6h])), 1e-9)', "interval hit share"),
        ('sum(increase(nearfield_emitter_privacy_suppressed_total[1h]))', "suppressed /h")]),
]


def main():
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(65 + j), "expr": e, "legendFormat": l, "datasource": {"type": "prometheus", "uid": "prometheus"}}
                for j, (e, l) in enumerate(targets)
            ],
        })
    dash = {
        "uid": "nearfield",
        "title": "nearfield: pipeline",
        "tags": ["nearfield"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboards", "nearfield.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(dash, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
