// better-auth's email-OTP plugin with its Redis secondary storage: the peer that
// bench/peer_better_auth.py measures against otpservice's POST /verify. Not a server to deploy.
//
// Environment: PORT (listen on 127.0.0.1:PORT), REDIS_URL, STORE_OTP ("plain", the plugin's
// default, or "hashed"), RATE_LIMIT ("on", the default, or "off"), BETTER_AUTH_SECRET,
// EXIT_ON_STDIN_EOF=1 (exit when standard input closes).
// Run with NODE_ENV=production, as deployed.
//
// /api/auth/* is better-auth's own handler. Two routes outside it exist for the benchmark only:
//   POST /bench/users {"emails": [...]}  creates those users (better-auth's in-memory database)
//   GET  /bench/otps                     the last code sendVerificationOTP was given, per email
import http from "node:http";

import { redisStorage } from "@better-auth/redis-storage";
import { betterAuth } from "better-auth";
import { toNodeHandler } from "better-auth/node";
import { emailOTP } from "better-auth/plugins/email-otp";
import { Redis } from "ioredis";

const port = Number(process.env.PORT);
const storeOTP = process.env.STORE_OTP ?? "plain";
if (!Number.isInteger(port) || port <= 0) throw new Error("PORT must be a port number");
if (storeOTP !== "plain" && storeOTP !== "hashed") throw new Error("STORE_OTP must be plain or hashed");
const rateLimitOn = (process.env.RATE_LIMIT ?? "on") === "on";

const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
const sentCodes = new Map(); // email -> the code the plugin asked us to deliver

const UNLIMITED = { window: 60, max: 1_000_000_000 };

const auth = betterAuth({
  baseURL: `http://127.0.0.1:${port}`,
  // No `database`: better-auth keeps users in its memory adapter. With `secondaryStorage` and
  // `verification.storeInDatabase` unset (false), verification values (the OTPs) live in Redis only.
  secondaryStorage: redisStorage({ client: redis }),
  telemetry: { enabled: false },
  // Rate limiting stays on as in production (NODE_ENV=production turns it on; with secondary
  // storage it counts in Redis: one EVAL of INCR + EXPIRE per request), with the plugin's limits
  // (3 per 60 s per IP and path) raised so that the load is not refused. RATE_LIMIT=off turns it off.
  rateLimit: {
    enabled: rateLimitOn,
    customRules: {
      "/email-otp/send-verification-otp": UNLIMITED,
      "/email-otp/check-verification-otp": UNLIMITED,
    },
  },
  plugins: [
    emailOTP({
      storeOTP,
      otpLength: 6,
      expiresIn: 600,
      allowedAttempts: 1_000_000_000, // the load is wrong guesses: no OTP may run out of attempts
      async sendVerificationOTP({ email, otp }) {
        sentCodes.set(email, otp);
      },
    }),
  ],
});

const authHandler = toNodeHandler(auth);

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch (error) {
        reject(error);
      }
    });
    req.on("error", reject);
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function benchRoute(req, res) {
  if (req.method === "POST" && req.url === "/bench/users") {
    const { emails } = await readJson(req);
    const context = await auth.$context;
    for (const email of emails) {
      await context.internalAdapter.createUser({ email, name: email, emailVerified: false });
    }
    return sendJson(res, 200, { created: emails.length });
  }
  if (req.method === "GET" && req.url === "/bench/otps") {
    return sendJson(res, 200, Object.fromEntries(sentCodes));
  }
  return sendJson(res, 404, { error: "not found" });
}

const server = http.createServer((req, res) => {
  if (req.url?.startsWith("/api/auth/")) return authHandler(req, res);
  benchRoute(req, res).catch((error) => sendJson(res, 500, { error: String(error) }));
});
server.keepAliveTimeout = 60_000;

await redis.ping();
server.listen(port, "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: port, storeOTP, rateLimit: rateLimitOn }));
});

// Stop on SIGTERM or SIGINT, and when standard input closes: the benchmark holds it open, so the
// server does not outlive a benchmark that was killed.
function shutdown() {
  server.close();
  server.closeAllConnections();
  redis.disconnect();
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
if (process.env.EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", shutdown);
  process.stdin.resume();
}
