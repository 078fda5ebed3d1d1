import type { RouteModule } from './context.js';
import { register } from './auth/register.js';
import { login } from './auth/login.js';
import { refresh } from './auth/refresh.js';
import { logout } from './auth/logout.js';
import { me } from './auth/me.js';
import { getWallet } from './wallet/get-wallet.js';
import { getBalance } from './wallet/get-balance.js';
import { addMoney } from './wallet/add-money.js';
import { transfer } from './wallet/transfer.js';
import { pay } from './wallet/pay.js';
import { refund } from './merchant/refund.js';
import { addBankAccount, listBankAccounts } from './wallet/bank-accounts.js';
import { withdraw, getWithdrawal } from './wallet/withdraw.js';
import { bankWebhook } from './webhooks/bank.js';
import { sandboxBank, sandboxCompletePayout } from './sandbox/bank.js';
import { getPayment } from './wallet/get-payment.js';
import { listTransactions } from './transactions/list-transactions.js';
import { getTransaction } from './transactions/get-transaction.js';
import { gatewayWebhook } from './webhooks/gateway.js';
import { sandboxCheckout } from './sandbox/checkout.js';
import { sandboxCompletePayment, sandboxGatewayStatus } from './sandbox/complete-payment.js';
import { healthz, readyz, metrics } from './ops/health.js';
import { reconciliation } from './admin/reconciliation.js';
import { freeze, unfreeze } from './admin/freeze.js';
import { createCampaign, getCampaign, listCampaigns } from './admin/campaigns.js';
import { adjust, fundCashbackPool } from './admin/funding.js';

/** Every route of the service. */
export const routes: RouteModule[] = [
  register,
  login,
  refresh,
  logout,
  me,
  getWallet,
  getBalance,
  addMoney,
  transfer,
  pay,
  refund,
  addBankAccount,
  listBankAccounts,
  withdraw,
  getWithdrawal,
  bankWebhook,
  sandboxBank,
  sandboxCompletePayout,
  sandboxGatewayStatus,
  getPayment,
  listTransactions,
  getTransaction,
  gatewayWebhook,
  sandboxCheckout,
  sandboxCompletePayment,
  healthz,
  readyz,
  metrics,
  reconciliation,
  freeze,
  unfreeze,
  createCampaign,
  listCampaigns,
  getCampaign,
  fundCashbackPool,
  adjust,
];
