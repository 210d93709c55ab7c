"""boto3 behind small interfaces; ClientError becomes a domain error."""
