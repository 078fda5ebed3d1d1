import { randomBytes } from 'node:crypto';
import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { errorResponses } from '../schemas.js';

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(id: string, amount: number, currency: string, status: string, nonce: string): string {
  const major = `${Math.trunc(amount / 100)}.${String(amount % 100).padStart(2, '0')}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
button{font-size:1rem;padding:.6rem 1.2rem;margin-right:.5rem}</style></head>
<body><h1>Sandbox gateway</h1>
<p>Payment <code>${escape(id)}</code></p>
<p>Amount: <strong>${escape(currency)} ${major}</strong> &middot; status: <span id="status">${escape(status)}</span></p>
<button data-outcome="succeeded">Pay</button><button data-outcome="failed">Decline</button>
<pre id="result"></pre>
<script nonce="${nonce}">
for (const b of document.querySelectorAll('button')) b.onclick = async () => {
  const r = await fetch('/sandbox/payments/${encodeURIComponent(id)}/complete', {method: 'POST',
    headers: {'content-type': 'application/json'}, body: JSON.stringify({outcome: b.dataset.outcome})});
  document.getElementById('result').textContent = JSON.stringify(await r.json(), null, 2);
};
</script></body></html>`;
}

export const sandboxCheckout: RouteModule = (app, ctx) => {
  if (!ctx.config.gatewaySandbox) return;
  app.get(
    '/sandbox/checkout/:payment_id',
    {
      schema: {
        tags: ['sandbox'],
        summary: 'Checkout page of the sandbox gateway (HTML)',
        params: Type.Object({ payment_id: Type.String({ maxLength: 64 }) }),
        produces: ['text/html'],
        response: { 200: Type.String({ description: 'HTML page' }), ...errorResponses(['payment_not_found']) },
      },
    },
    async (request, reply) => {
      const p = await ctx.payments.getForGateway(request.params.payment_id);
      const nonce = randomBytes(16).toString('base64');
      reply.header(
        'content-security-policy',
        `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`,
      );
      return reply.type('text/html; charset=utf-8').send(page(p.id, p.amount, p.currency, p.status, nonce));
    },
  );
};
