/** The TypeBox schemas of activation's HTTP messages (docs/protocols/activation.md). */
import { Type } from "typebox";

export const b64u = (max: number) => Type.String({ pattern: "^[A-Za-z0-9_-]*$", maxLength: max });
export const ServiceUid = Type.String({ minLength: 1, maxLength: 63 });
/** Query strings are text: whole numbers are checked by pattern, then converted. */
export const QueryInt = Type.String({ pattern: "^[0-9]{1,15}$" });
export const HandsetId = Type.String({ pattern: "^hs_[A-Za-z0-9_-]{22}$" });
export const ErrorBody = Type.Object({
  error: Type.Object({ code: Type.String(), message: Type.String() }),
});
export const SignedGrantSchema = Type.Object({
  grant: Type.Object({
    v: Type.Literal(1),
    activationId: Type.String(),
    serviceUid: Type.String(),
    handsetId: Type.String(),
    secret: Type.String(),
    exchangeUrl: Type.String(),
    expiresAt: Type.Integer(),
  }),
  keyId: Type.String(),
  signature: Type.String(),
});
export const ServiceInfoSchema = Type.Object({
  uid: Type.String(),
  name: Type.String(),
  keyId: Type.String(),
  publicKey: Type.String(),
  exchangeUrl: Type.String(),
});
export const LoginBody = Type.Object(
  {
    email: Type.String({ maxLength: 320 }),
    password: Type.String({ maxLength: 1024 }),
    identityKey: b64u(43),
    /** Ed25519 signature by the identity key over loginProofMessage (docs/protocols/activation.md). */
    proof: b64u(86),
    /** Epoch ms; a string of digits too, as HTML forms send it. */
    timestamp: Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: "^[0-9]{1,15}$" })]),
    label: Type.Optional(Type.String({ maxLength: 100 })),
  },
  { additionalProperties: false },
);
