"""What every service needs and that sits below them all: settings, the clock, the model
provider client. Imports only `contracts`."""
