import type { Db, Queryable } from '../db/pool.js';
import { withTransaction } from '../db/transaction.js';
import { isUniqueViolation } from '../db/errors.js';
import { DomainError } from '../errors.js';
import { createCustomerAccount } from '../ledger/accounts.js';
import { hashPassword, verifyPassword } from './passwords.js';
import { newPinHash } from './pin.js';
import { TokenSigner, hashRefreshToken, newRefreshToken, type Role } from './tokens.js';
import { handleCandidates } from './handles.js';
import type { RevokedSessions } from './revocations.js';
import { BatchLoader } from '../batch-loader.js';

export interface Registration {
  email: string;
  password: string;
  pin?: string;
  name?: string;
  phone?: string;
  role: Role;
  businessName?: string;
}

export interface UserView {
  id: string;
  email: string;
  name: string | null;
  role: Role;
}

export interface WalletSummary {
  id: string;
  handle: string;
  currency: string;
  balance: number;
}

/** Who is calling, resolved once per request from the access token. */
export interface Principal {
  userId: string;
  sessionId: string;
  role: Role;
  wallet: { id: string; accountId: number; handle: string } | null;
  /** The PIN's salt and keyed hash: compared in the ledger batch, never sent anywhere. */
  pin: { salt: Buffer; hash: Buffer } | null;
}

export interface TokenPair {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
}

export interface AuthOptions {
  signer: TokenSigner;
  pinPepper: string;
  refreshTokenTtlSeconds: number;
  currency: string;
  revocations: RevokedSessions;
}

const USER_CACHE_SIZE = 500_000;

const HANDLE_ATTEMPTS = 8;

export class AuthService {
  private readonly users: BatchLoader<string, Omit<Principal, 'userId' | 'sessionId'>>;

  constructor(
    private readonly db: Db,
    private readonly options: AuthOptions,
  ) {
    this.users = new BatchLoader((ids) => this.loadUsers(ids), { cacheSize: USER_CACHE_SIZE });
  }

  async register(input: Registration): Promise<{ user: UserView; wallet: WalletSummary | null }> {
    const email = input.email.trim().toLowerCase();
    const passwordHash = await hashPassword(input.password);
    const pin = input.pin === undefined ? undefined : newPinHash(this.options.pinPepper, input.pin);
    const displayName = input.role === 'merchant' ? input.businessName : input.name;
    const candidates = handleCandidates(displayName ?? email.split('@')[0]!, HANDLE_ATTEMPTS);
    for (const handle of candidates) {
      try {
        return await withTransaction(this.db, async (tx) => {
          const { rows } = await tx.query<{ id: string }>(
            `INSERT INTO users (email, password_hash, role, name, phone, business_name, pin_salt, pin_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
            [email, passwordHash, input.role, input.name ?? null, input.phone ?? null, input.businessName ?? null, pin?.salt ?? null, pin?.hash ?? null],
          );
          const userId = rows[0]!.id;
          const user: UserView = { id: userId, email, name: input.name ?? null, role: input.role };
          if (input.role === 'admin') return { user, wallet: null };
          const wallet = await this.createWallet(tx, userId, handle);
          return { user, wallet };
        });
      } catch (error) {
        if (isUniqueViolation(error, 'users_email_unique')) throw new DomainError('email_taken', 'This email is already registered');
        if (isUniqueViolation(error, 'wallets_handle_key')) continue;
        throw error;
      }
    }
    throw new Error(`no free wallet handle after ${HANDLE_ATTEMPTS} attempts`);
  }

  private async createWallet(tx: Queryable, userId: string, handle: string): Promise<WalletSummary> {
    const accountId = await createCustomerAccount(tx, this.options.currency);
    const { rows } = await tx.query<{ id: string }>(
      `INSERT INTO wallets (user_id, account_id, handle, currency) VALUES ($1, $2, $3, $4) RETURNING id`,
      [userId, accountId, handle, this.options.currency],
    );
    return { id: rows[0]!.id, handle, currency: this.options.currency, balance: 0 };
  }

  async login(emailInput: string, password: string): Promise<TokenPair> {
    const email = emailInput.trim().toLowerCase();
    const { rows } = await this.db.query<{ id: string; password_hash: string; role: Role }>(
      `SELECT id, password_hash, role FROM users WHERE lower(email) = $1`,
      [email],
    );
    const user = rows[0];
    const ok = await verifyPassword(user?.password_hash, password);
    if (!user || !ok) throw new DomainError('invalid_credentials', 'The email or password is wrong');
    return withTransaction(this.db, async (tx) => {
      const session = await tx.query<{ id: string }>(`INSERT INTO sessions (user_id) VALUES ($1) RETURNING id`, [user.id]);
      return this.issue(tx, user.id, session.rows[0]!.id, user.role);
    });
  }

  private async issue(tx: Queryable, userId: string, sessionId: string, role: Role): Promise<TokenPair> {
    const refresh = newRefreshToken();
    await tx.query(
      `INSERT INTO refresh_tokens (token_hash, session_id, expires_at)
       VALUES ($1, $2, now() + make_interval(secs => $3))`,
      [refresh.hash, sessionId, this.options.refreshTokenTtlSeconds],
    );
    const access = this.options.signer.sign({ userId, sessionId, role });
    return { access_token: access, refresh_token: refresh.token, token_type: 'Bearer', expires_in: this.options.signer.expiresIn };
  }

  /**
   * Rotates a refresh token: the presented token is spent and a new one issued in the same
   * session. Presenting a spent token means it was copied, so the whole session (every
   * token descended from the same login) is revoked.
   */
  async refresh(token: string): Promise<TokenPair> {
    const hash = hashRefreshToken(token);
    const result = await withTransaction(this.db, async (tx) => {
      const { rows } = await tx.query<{ session_id: string; user_id: string; role: Role }>(
        `UPDATE refresh_tokens r SET used_at = now()
           FROM sessions s JOIN users u ON u.id = s.user_id
          WHERE r.token_hash = $1 AND s.id = r.session_id
            AND r.used_at IS NULL AND r.expires_at > now() AND s.revoked_at IS NULL
          RETURNING r.session_id, s.user_id, u.role`,
        [hash],
      );
      const row = rows[0];
      if (row) return this.issue(tx, row.user_id, row.session_id, row.role);
      const revoked = await tx.query<{ id: string }>(
        `UPDATE sessions SET revoked_at = now(), revoke_reason = 'refresh_token_reuse'
          WHERE revoked_at IS NULL
            AND id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL)
          RETURNING id`,
        [hash],
      );
      for (const r of revoked.rows) this.options.revocations.add(r.id);
      return undefined;
    });
    if (!result) throw new DomainError('invalid_refresh_token', 'The refresh token is expired, revoked or already used');
    return result;
  }

  async logout(sessionId: string): Promise<void> {
    this.options.revocations.add(sessionId);
    await this.db.query(
      `UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = $1 AND revoked_at IS NULL`,
      [sessionId],
    );
  }

  /**
   * Resolves a bearer token to a principal; throws for anything but a live session. No
   * database work per request: the signature and expiry are checked here, revocation against
   * the in-memory revocation list, and what a principal is made of never changes once the
   * user exists, so it is loaded once (many users per query when several are new at once).
   */
  async authenticate(token: string): Promise<Principal> {
    const claims = this.options.signer.verify(token);
    if (!claims) throw new DomainError('invalid_token', 'The access token is invalid or expired');
    if (this.options.revocations.has(claims.sessionId)) throw new DomainError('invalid_token', 'The session has ended; log in again');
    const user = await this.users.get(claims.userId);
    if (!user) throw new DomainError('invalid_token', 'The user no longer exists');
    return { userId: claims.userId, sessionId: claims.sessionId, ...user };
  }

  private async loadUsers(ids: string[]): Promise<Map<string, Omit<Principal, 'userId' | 'sessionId'>>> {
    const { rows } = await this.db.query<{
      id: string;
      role: Role;
      wallet_id: string | null;
      account_id: number | null;
      handle: string | null;
      pin_salt: Buffer | null;
      pin_hash: Buffer | null;
    }>(
      `SELECT u.id, u.role, w.id AS wallet_id, w.account_id, w.handle, u.pin_salt, u.pin_hash
         FROM users u LEFT JOIN wallets w ON w.user_id = u.id
        WHERE u.id = ANY($1::uuid[])`,
      [ids],
    );
    return new Map(
      rows.map((r) => [
        r.id,
        {
          role: r.role,
          wallet: r.wallet_id === null ? null : { id: r.wallet_id, accountId: r.account_id!, handle: r.handle! },
          pin: r.pin_salt && r.pin_hash ? { salt: r.pin_salt, hash: r.pin_hash } : null,
        },
      ]),
    );
  }

  async me(userId: string): Promise<{ user: UserView; wallet: WalletSummary | null }> {
    const { rows } = await this.db.query<{
      id: string;
      email: string;
      name: string | null;
      role: Role;
      wallet_id: string | null;
      handle: string | null;
      currency: string | null;
      balance: number | null;
    }>(
      `SELECT u.id, u.email, u.name, u.role, w.id AS wallet_id, w.handle, w.currency, a.balance
         FROM users u LEFT JOIN wallets w ON w.user_id = u.id LEFT JOIN accounts a ON a.id = w.account_id
        WHERE u.id = $1`,
      [userId],
    );
    const r = rows[0];
    if (!r) throw new DomainError('invalid_token', 'The user no longer exists');
    return {
      user: { id: r.id, email: r.email, name: r.name, role: r.role },
      wallet: r.wallet_id ? { id: r.wallet_id, handle: r.handle!, currency: r.currency!, balance: r.balance! } : null,
    };
  }
}

