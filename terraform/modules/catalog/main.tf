# The lake as tables: one Glue table per dataset, with partition projection so Athena computes
# partitions from the path templates (no crawler, and new files are queryable at once). Columns
# follow the lake contract (docs/ARCHITECTURE.md); tests/integration/test_terraform.py checks
# them against core/schemas.py.

locals {
  prices     = ["open:double", "high:double", "low:double", "close:double", "volume:double"]
  emas       = [for n in [8, 13, 21, 55, 89, 144, 169] : "ema_${n}:double"]
  indicators = concat(local.emas, ["macd_fast:double", "macd_slow:double", "rsi_14:double", "atr_14:double", "vegas:tinyint"])
  fib_bars   = "3d,5d,8d,13d,21d,34d"
  intraday   = "5m,15m,30m,1h,2h,4h"
  years      = { type = "integer", range = "${var.first_year},${var.last_year}" }
  months     = { type = "integer", range = "1,12", digits = "2" }
  sessions   = { type = "date", format = "yyyy-MM-dd", range = "${var.first_minute_date},NOW", interval = "1", "interval.unit" = "DAYS" }
  year_month = "year=$${year}/month=$${month}/"

  tables = {
    bronze_daily = {
      location    = "bronze/raw_ohlcv/"
      partitions  = ["symbol:string"]
      description = "Daily bars as received, per symbol: data.parquet plus fragments not merged yet (unadjusted)"
      path        = "bronze/raw_ohlcv/symbol=$${symbol}/"
      columns     = concat(["date:date"], local.prices, ["vwap:double", "transactions:bigint", "source:string", "ingested_at:timestamp"])
      projection  = { symbol = { type = "injected" } }
    }
    bronze_minute = {
      location    = "bronze/raw_ohlcv_1m/"
      partitions  = ["date:date"]
      description = "Minute bars per session, every symbol: data.parquet plus fragments not merged yet"
      path        = "bronze/raw_ohlcv_1m/date=$${date}/"
      columns     = concat(["symbol:string", "start:timestamp"], local.prices, ["vwap:double", "trades:bigint", "source:string", "revision:int", "partial:boolean", "ingested_at:timestamp"])
      projection  = { date = local.sessions }
    }
    silver_fib = {
      location    = "silver/"
      partitions  = ["bar_interval:string", "year:int", "month:int"]
      description = "Fibonacci-length bars (3 to 34 sessions) from split-adjusted daily rows"
      path        = "silver/silver_$${bar_interval}/${local.year_month}"
      columns     = concat(["symbol:string", "start_date:date", "end_date:date"], local.prices, ["days:int", "complete:boolean"])
      projection  = { bar_interval = { type = "enum", values = local.fib_bars }, year = local.years, month = local.months }
    }
    silver_intraday = {
      location    = "silver/"
      partitions  = ["bar_interval:string", "date:date"]
      description = "Intraday bars (5m to 4h) of the regular session, from consolidated minute bars"
      path        = "silver/silver_$${bar_interval}/date=$${date}/"
      columns     = concat(["symbol:string", "start:timestamp", "end:timestamp"], local.prices, ["vwap:double", "trades:bigint", "minutes:int", "complete:boolean"])
      projection  = { bar_interval = { type = "enum", values = local.intraday }, date = local.sessions }
    }
    gold_1d = {
      location    = "gold/indicators_1d/"
      partitions  = ["year:int", "month:int"]
      description = "Indicators of daily bars, split-adjusted"
      path        = "gold/indicators_1d/${local.year_month}"
      columns     = concat(["symbol:string", "date:date", "close:double"], local.indicators)
      projection  = { year = local.years, month = local.months }
    }
    gold_fib = {
      location    = "gold/"
      partitions  = ["bar_interval:string", "year:int", "month:int"]
      description = "Indicators of Fibonacci bars, split-adjusted"
      path        = "gold/indicators_$${bar_interval}/${local.year_month}"
      columns     = concat(["symbol:string", "start_date:date", "end_date:date", "complete:boolean", "close:double"], local.indicators)
      projection  = { bar_interval = { type = "enum", values = local.fib_bars }, year = local.years, month = local.months }
    }
  }

  # Athena's projection settings: projection.<column>.<setting> = value, and the path template.
  parameters = {
    for k, t in local.tables : k => merge(
      {
        classification              = "parquet"
        EXTERNAL                    = "TRUE"
        "projection.enabled"        = "true"
        "storage.location.template" = "${var.lake_url}/${t.path}"
      },
      merge([for col, p in t.projection : { for s, v in p : "projection.${col}.${s}" => v }]...),
    )
  }
}

resource "aws_glue_catalog_database" "lake" {
  name        = var.database_name
  description = "The market-data lake as tables (partition projection, no crawler)"
}

resource "aws_glue_catalog_table" "this" {
  for_each = local.tables

  database_name = aws_glue_catalog_database.lake.name
  name          = each.key
  description   = each.value.description
  table_type    = "EXTERNAL_TABLE"
  parameters    = local.parameters[each.key]

  dynamic "partition_keys" {
    for_each = each.value.partitions

    content {
      name = split(":", partition_keys.value)[0]
      type = split(":", partition_keys.value)[1]
    }
  }

  storage_descriptor {
    location      = "${var.lake_url}/${each.value.location}"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = each.value.columns

      content {
        name = split(":", columns.value)[0]
        type = split(":", columns.value)[1]
      }
    }
  }
}
