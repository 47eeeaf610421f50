import { Migration } from '@mikro-orm/migrations';

export class Migration20261123165748_user_public_keys extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table \`user_public_keys\` (\`id\` text not null, \`created_at\` datetime not null, \`updated_at\` datetime not null, \`user_id\` text not null, \`name\` text not null, \`type\` text not null, \`public_key\` text not null, \`fingerprint\` text not null, constraint \`user_public_keys_user_id_foreign\` foreign key(\`user_id\`) references \`users\`(\`id\`) on delete cascade on update cascade, primary key (\`id\`));`);
    this.addSql(`create index \`user_public_keys_user_id_index\` on \`user_public_keys\` (\`user_id\`);`);
    this.addSql(`create unique index \`user_public_keys_user_id_fingerprint_unique\` on \`user_public_keys\` (\`user_id\`, \`fingerprint\`);`);
  }

}
