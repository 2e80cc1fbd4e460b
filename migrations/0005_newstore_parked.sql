-- Whether an event of the order was ever parked (waiting for its sale): deliver-hail releases
-- the order's parked events after its sale only when this is set, so a sale with nothing
-- waiting costs no request to the PARKED stream. Set under the order's row lock by the stage
-- that parks, read by the delivery's update of that row (see runtime::park on the race).
ALTER TABLE newstore_orders ADD COLUMN parked boolean NOT NULL DEFAULT false;
