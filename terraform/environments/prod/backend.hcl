# State of the prod environment: terraform init -backend-config=prod/backend.hcl
# -backend-config="bucket=$STATE_BUCKET" -backend-config="region=$REGION" (terraform/README.md).
key = "condvest/prod/terraform.tfstate"
