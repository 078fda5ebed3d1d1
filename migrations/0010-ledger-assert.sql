-- Raises (and so aborts the transaction) unless `ok` is true. The ledger's write statement
-- checks with it that the database agrees with the batch's arithmetic, so that a COMMIT sent
-- right behind the write can never commit a batch that disagrees.
CREATE FUNCTION ledger_assert(ok boolean, message text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION 'ledger invariant violated: %', message USING ERRCODE = 'internal_error';
  END IF;
  RETURN true;
END;
$$;
