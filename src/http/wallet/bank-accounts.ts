import { Type } from 'typebox';
import type { RouteModule } from '../context.js';
import { principalOf } from '../context.js';
import { authenticate } from '../guards.js';
import { Id, Timestamp, bearer, errorResponses } from '../schemas.js';

export const BankAccountSchema = Type.Object({
  id: Id,
  holder_name: Type.String(),
  ifsc: Type.String(),
  account_number_last4: Type.String({ description: 'Only the last four digits are ever shown' }),
  created_at: Timestamp,
});

export const addBankAccount: RouteModule = (app, ctx) => {
  app.post(
    '/wallet/bank-accounts',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['withdrawals'],
        summary: 'Register a bank account to withdraw to',
        security: bearer,
        body: Type.Object(
          {
            account_number: Type.String({ pattern: '^[0-9]{9,18}$', description: '9 to 18 digits' }),
            ifsc: Type.String({ pattern: '^[A-Za-z]{4}0[A-Za-z0-9]{6}$', description: 'Indian Financial System Code, e.g. HDFC0001234' }),
            holder_name: Type.String({ minLength: 1, maxLength: 100 }),
          },
          { additionalProperties: false },
        ),
        response: { 201: BankAccountSchema, ...errorResponses(['bank_account_exists'], { authenticated: true }) },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const account = await ctx.bankAccounts.add(principalOf(request).userId, { accountNumber: b.account_number, ifsc: b.ifsc, holderName: b.holder_name });
      return reply.code(201).send(account);
    },
  );
};

export const listBankAccounts: RouteModule = (app, ctx) => {
  app.get(
    '/wallet/bank-accounts',
    {
      onRequest: authenticate(ctx),
      schema: {
        tags: ['withdrawals'],
        summary: "The caller's bank accounts",
        security: bearer,
        response: { 200: Type.Object({ data: Type.Array(BankAccountSchema) }), ...errorResponses([], { authenticated: true }) },
      },
    },
    async (request) => ({ data: await ctx.bankAccounts.list(principalOf(request).userId) }),
  );
};
