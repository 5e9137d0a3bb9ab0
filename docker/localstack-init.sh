#!/bin/sh
# LocalStack ready hook: the bucket, stream and topic the compose services expect.
set -eu
awslocal s3 mb s3://condvest-lake
awslocal kinesis create-stream --stream-name condvest-ticks --shard-count 1
awslocal sns create-topic --name condvest-alarms
