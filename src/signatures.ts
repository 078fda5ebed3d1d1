import { createHmac, timingSafeEqual } from 'node:crypto';

/** `Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` */
export function signPayload(secret: string, rawBody: string | Buffer, timestamp: number): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/**
 * Verifies a webhook signature against the exact bytes received. Any of several `v1`
 * values may match (gateways send more than one while rotating secrets).
 */
export function verifySignature(
  secret: string,
  rawBody: Buffer,
  header: string | undefined,
  toleranceSeconds: number,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  if (!header || header.length > 1024) return false;
  let timestamp: number | undefined;
  const candidates: Buffer[] = [];
  for (const part of header.split(',')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === 't' && value && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    if (name === 'v1' && value && /^[0-9a-f]{64}$/.test(value)) candidates.push(Buffer.from(value, 'hex'));
  }
  if (timestamp === undefined || candidates.length === 0) return false;
  if (Math.abs(nowSeconds - timestamp) > toleranceSeconds) return false;
  const expected = createHmac('sha256', secret).update(`${timestamp}.`).update(rawBody).digest();
  return candidates.some((candidate) => timingSafeEqual(candidate, expected));
}

export interface Delivery {
  event_id: string;
  type: string;
  webhook_status: number;
  webhook_response: unknown;
}

/**
 * Delivers a signed event the way a gateway or bank does: the JSON body, signed with the
 * scheme above under `header`, POSTed to `url` with a timeout. Used by the sandboxes.
 */
export async function deliverSigned(
  url: string,
  header: string,
  secret: string,
  event: { id: string; type: string },
  timeoutMs: number,
): Promise<Delivery> {
  const body = JSON.stringify(event);
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', [header]: signPayload(secret, body, Math.floor(Date.now() / 1000)) },
    body,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Not JSON: keep the text as it came.
  }
  return { event_id: event.id, type: event.type, webhook_status: response.status, webhook_response: parsed };
}
