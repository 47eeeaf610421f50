import { Migration } from '@mikro-orm/migrations';

export class Migration20261123165748_user_public_keys extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "user_public_keys" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "user_id" uuid not null, "name" varchar(200) not null, "type" varchar(64) not null, "public_key" text not null, "fingerprint" varchar(100) not null, constraint "user_public_keys_pkey" primary key ("id"));`);
    this.addSql(`alter table "user_public_keys" add constraint "user_public_keys_user_id_fingerprint_unique" unique ("user_id", "fingerprint");`);

    this.addSql(`alter table "user_public_keys" add constraint "user_public_keys_user_id_foreign" foreign key ("user_id") references "users" ("id") on update cascade on delete cascade;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table if exists "user_public_keys" cascade;`);
  }

}
