# State of the dev environment: terraform init -backend-config=dev/backend.hcl
# -backend-config="bucket=$STATE_BUCKET" -backend-config="region=$REGION" (terraform/README.md).
key = "condvest/dev/terraform.tfstate"
