resource "aws_kms_key" "lake" {
  description             = "Encrypts the ${var.bucket_name} lake"
  deletion_window_in_days = var.kms_deletion_window_days
  enable_key_rotation     = true
  tags                    = var.tags
}

resource "aws_kms_alias" "lake" {
  name          = "alias/${var.bucket_name}"
  target_key_id = aws_kms_key.lake.key_id
}

resource "aws_s3_bucket" "lake" {
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket = aws_s3_bucket.lake.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  # Consolidation rewrites per-day fragments into one file per symbol; the superseded
  # versions are only an undo window.
  rule {
    id     = "bronze-fragments"
    status = "Enabled"

    filter {
      prefix = var.fragment_prefix
    }

    noncurrent_version_expiration {
      noncurrent_days = var.fragment_expiration_days
    }
  }

  rule {
    id     = "quarantine"
    status = "Enabled"

    filter {
      prefix = "quarantine/"
    }

    expiration {
      days = var.quarantine_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # The raw trades archive (bronze/trades/) lets bars and alerts be audited and recomputed;
  # it is by far the largest prefix, so it is kept only as long as that is useful.
  rule {
    id     = "trades-archive"
    status = "Enabled"

    filter {
      prefix = var.trades_prefix
    }

    expiration {
      days = var.trades_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Per-symbol month files of minute bars are a derived read path that batch.consolidate
  # --minutes rewrites each day (the current month) and can rebuild at any time from the
  # consolidated sessions: superseded versions are no undo worth keeping.
  rule {
    id     = "minutes-by-symbol"
    status = "Enabled"

    filter {
      prefix = var.minutes_by_symbol_prefix
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  rule {
    id     = "noncurrent-and-multipart"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

data "aws_iam_policy_document" "lake" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.lake.arn,
      "${aws_s3_bucket.lake.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "lake" {
  bucket = aws_s3_bucket.lake.id
  policy = data.aws_iam_policy_document.lake.json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}
