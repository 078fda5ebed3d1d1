import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { claimFor } from '../idempotency.js';
import { Amount, Id, IdempotencyHeaders, Pin, Timestamp, bearer, errorResponses, MONEY_MOVEMENT_ERRORS } from '../schemas.js';

export const withdraw: RouteModule = (app, ctx) => {
  app.post(
    '/wallet/withdraw',
    {
      onRequest: authenticate(ctx),
      config: { rateLimit: 'pin' },
      schema: {
        tags: ['withdrawals'],
        summary: 'Withdraw to a registered bank account',
        description: 'Holds the amount at once (held_balance rises, balance does not). When the bank confirms, the hold is posted; when it rejects or times out, the hold is released.',
        security: bearer,
        headers: IdempotencyHeaders,
        body: Type.Object({ amount: Amount, pin: Pin, bank_account: Type.String({ minLength: 1, maxLength: 64, description: 'A bank account id from POST /wallet/bank-accounts' }) }, { additionalProperties: false }),
        response: {
          202: Type.Object({ withdrawal_id: Id, status: Type.Literal('pending'), amount: Type.Integer() }),
          ...errorResponses([...MONEY_MOVEMENT_ERRORS, 'bank_account_not_found'], { authenticated: true }),
        },
      },
    },
    async (request, reply) => {
      const { pin, ...fingerprint } = request.body;
      const claim = claimFor(request, fingerprint);
      return ctx.idempotency.respond(reply, claim, () =>
        ctx.withdrawals.withdraw(principalOf(request), { amount: fingerprint.amount, bankAccountId: fingerprint.bank_account, pin }, claim),
      );
    },
  );
};

export const WithdrawalSchema = Type.Object({
  id: Id,
  status: Type.Union([Type.Literal('pending'), Type.Literal('succeeded'), Type.Literal('failed')]),
  amount: Type.Integer(),
  currency: Type.String(),
  bank_account: Type.Object({ id: Id, ifsc: Type.String(), account_number_last4: Type.String() }),
  failure_reason: Type.Union([Type.String(), Type.Null()]),
  created_at: Timestamp,
  updated_at: Timestamp,
});

export const getWithdrawal: RouteModule = (app, ctx) => {
  app.get(
    '/wallet/withdrawals/:id',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['withdrawals'],
        summary: 'A withdrawal of the caller',
        security: bearer,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 200: WithdrawalSchema, ...errorResponses(['withdrawal_not_found', 'forbidden'], { authenticated: true }) },
      },
    },
    async (request) => ctx.withdrawals.get(principalOf(request), request.params.id),
  );
};
