# ---- live flow recovery: an EFS store that outlives the task ---------------------------------
# The live flow snapshots its state (window contents, each shard's last sequence number) to
# local.recovery_path every few seconds. The store lives on EFS so a replaced or killed task
# resumes from the last snapshot instead of losing what Kinesis still holds. Only one live task
# may use the store at a time: the service never runs two side by side (see aws_ecs_service).

resource "aws_efs_file_system" "recovery" {
  creation_token   = "${var.name}-live-recovery"
  encrypted        = true
  kms_key_id       = var.recovery_kms_key_arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  tags = merge(var.tags, { Name = "${var.name}-live-recovery" })
}

resource "aws_efs_backup_policy" "recovery" {
  file_system_id = aws_efs_file_system.recovery.id

  backup_policy {
    status = "ENABLED"
  }
}

resource "aws_efs_access_point" "recovery" {
  file_system_id = aws_efs_file_system.recovery.id

  # The image's unprivileged user (docker/Dockerfile: uid and gid 10001).
  posix_user {
    uid = 10001
    gid = 10001
  }

  root_directory {
    path = "/live"

    creation_info {
      owner_uid   = 10001
      owner_gid   = 10001
      permissions = "0750"
    }
  }

  tags = var.tags
}

resource "aws_security_group" "recovery" {
  name        = "${var.name}-live-recovery"
  description = "EFS recovery store of the ${var.name} live flow"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "recovery_nfs" {
  security_group_id            = aws_security_group.recovery.id
  description                  = "NFS from the ECS tasks"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_security_group_egress_rule" "tasks_nfs" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "NFS to the live flow's recovery store"
  ip_protocol                  = "tcp"
  from_port                    = 2049
  to_port                      = 2049
  referenced_security_group_id = aws_security_group.recovery.id
}

resource "aws_efs_mount_target" "recovery" {
  count = length(var.subnet_ids)

  file_system_id  = aws_efs_file_system.recovery.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = [aws_security_group.recovery.id]
}

data "aws_iam_policy_document" "recovery" {
  statement {
    sid       = "RecoveryStore"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"]
    resources = [aws_efs_file_system.recovery.arn]

    condition {
      test     = "StringEquals"
      variable = "elasticfilesystem:AccessPointArn"
      values   = [aws_efs_access_point.recovery.arn]
    }
  }
}
